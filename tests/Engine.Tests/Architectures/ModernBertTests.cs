using System.Text.Json;
using AttributionFleet.Engine.Architectures.ModernBert;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Models;
using AttributionFleet.Engine.Tests.Support;
using AttributionFleet.Engine.Tokenization;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Architectures;

/// <summary>
/// ModernBertForSequenceClassification against this project's PyTorch reference (tests/fixtures/architectures/
/// generate_modernbert.py): 3 layers alternating global and sliding-window attention (window |i − j| ≤ 2 or 3, texts
/// of up to 14 tokens), rotary positions with two thetas, GeGLU, LayerNorms without bias (modernbert) or with every
/// optional bias (modernbert-mean, mean pooling); padded batches.
/// </summary>
public sealed class ModernBertTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-modernbert-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("modernbert", ModernBertPooling.Cls, false)]
    [InlineData("modernbert-mean", ModernBertPooling.Mean, true)]
    public void LogitsMatchPyTorchReference(string fixture, ModernBertPooling pooling, bool biases)
    {
        var (ids, mask, l32, l64) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture));
        Assert.IsType<ModernBertClassifier>(model);
        Assert.Equal("ModernBertForSequenceClassification", model.Config.Architecture);
        var settings = ModernBertArchitecture.SettingsOf(model.Config);
        Assert.Equal(pooling, settings.Pooling);
        Assert.Equal(biases, model.Weights.ContainsKey("L1.attn_norm.b") && model.Weights.ContainsKey("L1.qkv.b") && model.Weights.ContainsKey("head.dense.b"));
        Assert.False(model.Weights.ContainsKey("L0.attn_norm.w"));
        Assert.Contains(true, settings.SlidingLayers);
        Assert.Contains(false, settings.SlidingLayers);
        Assert.True(settings.LocalAttention / 2 + 1 < ids.shape[1], "the sliding window must be shorter than the texts");

        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>();
        using var model64 = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: ScalarType.Float64);
        double diff64 = (model64.Logits(ids, mask) - l64).abs().max().item<double>();
        output.WriteLine($"{fixture}: float32 max |logits − reference| {diff:E2}, float64 {diff64:E2}");
        Assert.True(l64.abs().max().item<double>() > 0.1, "reference logits should not be trivially small");
        Assert.True(diff <= 1e-5, $"float32 max diff {diff:E3}");
        Assert.True(diff64 <= 1e-9, $"float64 max diff {diff64:E3}");
    }

    /// <summary>The sliding window changes the result: the same weights with one global-only config disagree.</summary>
    [Fact]
    public void SlidingWindowIsApplied()
    {
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("modernbert");
        var dir = ArchitectureFixtures.CopyWithConfig("modernbert", Path.Combine(_dir, "global"), c => c["global_attn_every_n_layers"] = 1);
        using var model = ModelLoader.Load(dir);
        Assert.DoesNotContain(true, ModernBertArchitecture.SettingsOf(model.Config).SlidingLayers);
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>();
        Assert.True(diff > 1e-3, $"all-global attention should differ from the alternating reference, differs by {diff:E2}");
    }

    /// <summary>transformers ≥ 5 configs: layer_types and rope_parameters instead of the older fields give the same model.</summary>
    [Fact]
    public void LayerTypesAndRopeParametersReadAsTheOlderFields()
    {
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("modernbert");
        var dir = ArchitectureFixtures.CopyWithConfig("modernbert", Path.Combine(_dir, "v5"), c =>
        {
            c.Remove("global_attn_every_n_layers");
            c.Remove("global_rope_theta");
            c.Remove("local_rope_theta");
            c["layer_types"] = new System.Text.Json.Nodes.JsonArray("full_attention", "sliding_attention", "full_attention");
            c["rope_parameters"] = System.Text.Json.Nodes.JsonNode.Parse(
                """{"full_attention": {"rope_type": "default", "rope_theta": 160000.0}, "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}""");
        });
        using var model = ModelLoader.Load(dir);
        Assert.True((model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);
    }

    [Theory]
    [InlineData("classifier_pooling", "\"max\"")]
    [InlineData("layer_types", "[\"full_attention\"]")]
    [InlineData("rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}")]
    [InlineData("norm_bias", "\"no\"")]
    [InlineData("hidden_activation", "\"swish\"")]
    public void BadConfigIsRefusedNamingTheField(string field, string value)
    {
        var dir = ArchitectureFixtures.CopyWithConfig("modernbert", Path.Combine(_dir, field), c => c[field] = System.Text.Json.Nodes.JsonNode.Parse(value));
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains(field, e.Message);
    }

    [Fact]
    public void CheckpointWithTheWrongBiasesIsRefusedListingTheKeys()
    {
        // The weights have no biases, the config says they have: every missing key is named.
        var dir = ArchitectureFixtures.CopyWithConfig("modernbert", Path.Combine(_dir, "bias"), c => c["mlp_bias"] = true);
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("missing key 'model.layers.0.mlp.Wi.bias'", e.Message);
        Assert.Contains("missing key 'model.layers.2.mlp.Wo.bias'", e.Message);
    }

    public static TheoryData<string, OutputKind, Precision> DeepLiftCases() => FixtureExactness.Cases("modernbert", "modernbert-mean");

    [Theory]
    [MemberData(nameof(DeepLiftCases))]
    public void DeepLiftIsExactOnPaddedBatch(string fixture, OutputKind kind, Precision precision) =>
        FixtureExactness.DeepLiftIsExactOnPaddedBatch(fixture, kind, precision, output);

    /// <summary>
    /// One reference row shared by a padded batch (each text's ids replaced by the pad id, the same for all):
    /// exact, and the same scores as the reference expanded to a row per text.
    /// </summary>
    [Theory]
    [InlineData("modernbert")]
    [InlineData("modernbert-mean")]
    public void SharedReferenceRowOnPaddedBatchIsExact(string fixture) => FixtureExactness.SharedReferenceRowOnPaddedBatchIsExact(fixture, output);

    /// <summary>
    /// tokenizer.json (the bpe fixture's vocabulary and merges, ModernBERT's [CLS]/[SEP]/[PAD]/[MASK]/[UNK] after it,
    /// NFC, ByteLevel, TemplateProcessing) against ids computed by the generator's own byte-level BPE, on 25 sentences;
    /// then the model's logits on them against the reference's.
    /// </summary>
    [Fact]
    public void TokenizerIdsMatchReferenceOn25Sentences()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ArchitectureFixtures.Folder("modernbert"), "tokenizer_case.json")));
        var c = doc.RootElement;
        var sentences = c.GetProperty("sentences").EnumerateArray().Select(s => s.GetString()!).ToList();
        var expected = c.GetProperty("ids").EnumerateArray().Select(a => a.EnumerateArray().Select(i => i.GetInt32()).ToArray()).ToList();
        Assert.Equal(25, sentences.Count);
        var tokenizer = TokenizerLoader.Load(ArchitectureFixtures.Folder("modernbert"), "modernbert");
        for (int i = 0; i < sentences.Count; i++)
            Assert.True(expected[i].SequenceEqual(tokenizer.Encode(sentences[i], 512).Ids),
                $"sentence {i} '{sentences[i]}': expected [{string.Join(",", expected[i])}], got [{string.Join(",", tokenizer.Encode(sentences[i], 512).Ids)}]");

        using var model = ModelLoader.Load(ArchitectureFixtures.Folder("modernbert"));
        Assert.Equal(model.Config.PadTokenId, tokenizer.PadId);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = tensor(Json.Long2(c.GetProperty("attention_mask")));
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - tensor(Json.Double2(c.GetProperty("logits_f32")))).abs().max().item<double>();
        output.WriteLine($"modernbert, 25 sentences: max |logits − reference| {diff:E2}");
        Assert.True(diff <= 1e-5, $"max diff {diff:E3}");
    }

    /// <summary>Texts through the explainer (tokenizer.json, every reference kind), float64: exact.</summary>
    [Theory]
    [InlineData("pad")]
    [InlineData("mask")]
    [InlineData("zero")]
    public void ExplainsTextsExactly(string reference)
    {
        using var loaded = Text.LoadedModel.Load(ArchitectureFixtures.Folder("modernbert"), CPU);
        var texts = new[] { "The plot was dull but the acting was wonderful.", "Fast delivery and great battery!", "Bad movie." };
        var results = new Text.TextExplainer(loaded).Explain(texts, new Text.ExplainRequest { Precision = "float64", References = new[] { reference } });
        foreach (var e in results)
        {
            output.WriteLine($"{reference}: {e.Text}: f(x) {e.Fx:F4} f(x0) {e.Fx0:F4} relative delta {e.RelativeDelta:E2}");
            Assert.True(e.RelativeDelta <= 1e-10, $"relative delta {e.RelativeDelta:E2}");
            Assert.True(e.Scores.Max(Math.Abs) > 1e-4);
        }
    }
}
