using System.Text.Json;
using AttributionFleet.Engine.Architectures.DebertaV2;
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
/// DebertaV2ForSequenceClassification (DeBERTa-v3 settings) against this project's PyTorch reference
/// (tests/fixtures/architectures/generate_deberta.py): disentangled attention c2c + c2p + p2c, 8 position buckets so the
/// 14-token text reaches the log buckets, share_att_key and LayerNorm'd rel_embeddings (deberta-v3); separate position
/// projections, no buckets, clamped relative positions (deberta-v2-separate-keys); padded batches.
/// </summary>
public sealed class DebertaV2Tests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-deberta-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("deberta-v3", true)]
    [InlineData("deberta-v2-separate-keys", false)]
    public void LogitsMatchPyTorchReference(string fixture, bool shared)
    {
        var (ids, mask, l32, l64) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture));
        Assert.IsType<DebertaV2Classifier>(model);
        Assert.Equal("DebertaV2ForSequenceClassification", model.Config.Architecture);
        Assert.Equal(shared, DebertaV2Architecture.SettingsOf(model.Config).ShareAttKey);
        Assert.Equal(!shared, model.Weights.ContainsKey("L0.posk") && model.Weights.ContainsKey("L0.posq"));

        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>();
        using var model64 = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: ScalarType.Float64);
        double diff64 = (model64.Logits(ids, mask) - l64).abs().max().item<double>();
        output.WriteLine($"{fixture}: float32 max |logits − reference| {diff:E2}, float64 {diff64:E2}");
        Assert.True(l64.abs().max().item<double>() > 0.1, "reference logits should not be trivially small");
        Assert.True(diff <= 1e-5, $"float32 max diff {diff:E3}");
        Assert.True(diff64 <= 1e-9, $"float64 max diff {diff64:E3}");
    }

    /// <summary>The 14-token text of the deberta-v3 case reaches past position_buckets / 2: the log branch is in use.</summary>
    [Fact]
    public void LogBucketsAreExercised()
    {
        var (ids, _, _, _) = ArchitectureFixtures.Case("deberta-v3");
        using var model = (DebertaV2Classifier)ModelLoader.Load(ArchitectureFixtures.Folder("deberta-v3"));
        var s = DebertaV2Architecture.SettingsOf(model.Config);
        long length = ids.shape[1];
        Assert.True(length > s.PositionBuckets / 2, "the texts must be longer than position_buckets / 2");
        var rel = model.RelativePositions(length);
        var plain = arange(length).unsqueeze(1) - arange(length).unsqueeze(0);
        // Within ±mid the positions are as they are; beyond, log buckets compress them (13 → 6 with mid 4, max 64).
        Assert.Equal(3L, rel[3, 0].item<long>());
        Assert.Equal(6L, rel[13, 0].item<long>());
        Assert.Equal(-6L, rel[0, 13].item<long>());
        Assert.True(rel.ne(plain).any().item<bool>());
    }

    [Theory]
    [InlineData("position_biased_input", "true")]
    [InlineData("relative_attention", "false")]
    [InlineData("pos_att_type", "[\"c2p\", \"p2p\"]")]
    [InlineData("norm_rel_ebd", "\"batch_norm\"")]
    [InlineData("type_vocab_size", "2")]
    [InlineData("conv_kernel_size", "3")]
    [InlineData("hidden_act", "\"swish\"")]
    public void BadConfigIsRefusedNamingTheField(string field, string value)
    {
        var dir = ArchitectureFixtures.CopyWithConfig("deberta-v3", Path.Combine(_dir, field), c => c[field] = System.Text.Json.Nodes.JsonNode.Parse(value));
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains(field, e.Message);
    }

    /// <summary>HF's older string form of pos_att_type ("p2c|c2p") reads as the list.</summary>
    [Fact]
    public void PosAttTypeStringFormReadsAsTheList()
    {
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("deberta-v3");
        var dir = ArchitectureFixtures.CopyWithConfig("deberta-v3", Path.Combine(_dir, "pipe"), c => c["pos_att_type"] = "p2c|c2p");
        using var model = ModelLoader.Load(dir);
        Assert.True((model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);
    }

    public static TheoryData<string, OutputKind, Precision> DeepLiftCases()
    {
        var data = new TheoryData<string, OutputKind, Precision>();
        foreach (var f in new[] { "deberta-v3", "deberta-v2-separate-keys" })
            foreach (var o in new[] { OutputKind.Logit, OutputKind.CenteredLogit, OutputKind.Probability })
                foreach (var p in new[] { Precision.Float64, Precision.Float32 })
                    data.Add(f, o, p);
        return data;
    }

    [Theory]
    [MemberData(nameof(DeepLiftCases))]
    public void DeepLiftIsExactOnPaddedBatch(string fixture, OutputKind kind, Precision precision)
    {
        var dtype = precision == Precision.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var (ids, mask, _, _) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: dtype);
        var reference = ArchitectureTests.ReferenceIds(ids, mask, model.Config);
        long target = model.OutputSize - 1;
        var batch = new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(reference) }, Enumerable.Repeat(target, (int)ids.shape[0]).ToArray());
        var result = new DeepLift().Attribute(model, batch, new MethodOptions { Output = kind });

        double delta = result.Delta.abs().max().item<double>();
        double scale = maximum(result.Fx.abs(), result.Fx0.abs()).max().item<double>();
        double change = (result.Fx - result.Fx0).abs().min().item<double>();
        double relative = (result.Delta.abs() / (result.Fx - result.Fx0).abs()).max().item<double>();
        double scores = result.Scores.abs().max().item<double>();
        output.WriteLine($"{fixture} {kind} {precision}: max|delta| {delta:E2}, max relative delta {relative:E2}, min|f(x)−f(x0)| {change:E2}, max|score| {scores:E2}");
        Assert.True(change > 1e-4, "the test needs f(x) != f(x0)");
        Assert.True(scores > 1e-4, "scores should not be all zero");
        if (precision == Precision.Float64) Assert.True(relative <= 1e-10, $"relative delta {relative:E2}");
        else Assert.True(delta <= 1e-4 * scale, $"|delta| {delta:E2} > 1e-4 × {scale:E2}");
        Assert.Equal(0.0, result.Scores.masked_select(mask.logical_not()).abs().max().item<double>());
    }

    /// <summary>
    /// spm.model (DeBERTa-v3's plain layout: [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3) against python3-sentencepiece's ids with
    /// [CLS] … [SEP] on 25 sentences; then the model's logits on them against the reference's.
    /// </summary>
    [Fact]
    public void TokenizerIdsMatchSentencePieceOn25Sentences()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ArchitectureFixtures.Folder("deberta-v3"), "tokenizer_case.json")));
        var c = doc.RootElement;
        var sentences = c.GetProperty("sentences").EnumerateArray().Select(s => s.GetString()!).ToList();
        var expected = c.GetProperty("ids").EnumerateArray().Select(a => a.EnumerateArray().Select(i => i.GetInt32()).ToArray()).ToList();
        Assert.Equal(25, sentences.Count);
        var tokenizer = TokenizerLoader.Load(ArchitectureFixtures.Folder("deberta-v3"), "deberta-v2");
        Assert.Equal((1, 2, 0), (tokenizer.StartId, tokenizer.EndId, tokenizer.PadId));
        for (int i = 0; i < sentences.Count; i++)
            Assert.True(expected[i].SequenceEqual(tokenizer.Encode(sentences[i], 512).Ids),
                $"sentence {i} '{sentences[i]}': expected [{string.Join(",", expected[i])}], got [{string.Join(",", tokenizer.Encode(sentences[i], 512).Ids)}]");

        using var model = ModelLoader.Load(ArchitectureFixtures.Folder("deberta-v3"));
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = tensor(Json.Long2(c.GetProperty("attention_mask")));
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - tensor(Json.Double2(c.GetProperty("logits_f32")))).abs().max().item<double>();
        output.WriteLine($"deberta-v3, 25 sentences: max |logits − reference| {diff:E2}");
        Assert.True(diff <= 1e-5, $"max diff {diff:E3}");
    }

    /// <summary>Texts through the explainer (SentencePiece tokenizer, every reference kind), float64: exact.</summary>
    [Theory]
    [InlineData("pad")]
    [InlineData("mask")]
    [InlineData("zero")]
    public void ExplainsTextsExactly(string reference)
    {
        using var loaded = Text.LoadedModel.Load(ArchitectureFixtures.Folder("deberta-v3"), CPU);
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
