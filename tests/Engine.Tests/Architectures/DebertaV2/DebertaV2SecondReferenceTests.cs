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

namespace AttributionFleet.Engine.Tests.Architectures.DebertaV2;

/// <summary>
/// The DeBERTa-v2 model against a second, independently written PyTorch reference of modeling_deberta_v2.py
/// (tests/fixtures/architectures/generate_deberta.py, not generate_deberta_v2.py, which made the fixtures of
/// <see cref="DebertaV2Tests"/>): deberta-v3 (share_att_key, position_buckets 8 so the 14-token text reaches the log
/// buckets, LayerNorm'd rel_embeddings, pos_att_type [p2c, c2p]) and deberta-v2-separate-keys (pos_key_proj /
/// pos_query_proj, no buckets, max_relative_positions 6 so distances are clamped, rel_embeddings without LayerNorm, 2
/// labels); padded batches.
/// </summary>
public sealed class DebertaV2SecondReferenceTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("deberta-v3", true)]
    [InlineData("deberta-v2-separate-keys", false)]
    public void LogitsMatchSecondPyTorchReference(string fixture, bool shared)
    {
        var (ids, mask, l32, l64) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture));
        Assert.IsType<DebertaV2Classifier>(model);
        Assert.Equal("DebertaV2ForSequenceClassification", model.Config.Architecture);
        Assert.Equal(shared, DebertaV2Architecture.SettingsOf(model.Config).ShareAttentionKey);
        Assert.Equal(!shared, model.Weights.ContainsKey("L0.pk") && model.Weights.ContainsKey("L0.pq"));
        Assert.False(mask.all().item<bool>(), "the batch must be padded");

        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>();
        using var model64 = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: ScalarType.Float64);
        double diff64 = (model64.Logits(ids, mask) - l64).abs().max().item<double>();
        output.WriteLine($"{fixture}: float32 max |logits − second reference| {diff:E2}, float64 {diff64:E2}, max |logit| {l64.abs().max().item<double>():F3}");
        Assert.True(l64.abs().max().item<double>() > 0.1, "reference logits should not be trivially small");
        Assert.True(diff <= 1e-5, $"float32 max diff {diff:E3}");
        Assert.True(diff64 <= 1e-9, $"float64 max diff {diff64:E3}");
    }

    /// <summary>
    /// The 14-token text of the deberta-v3 case reaches past position_buckets / 2: the log branch is in use
    /// (13 → 6 with mid 4, max 64), and the v2-separate-keys texts are longer than its span of 6 (clamped rows).
    /// </summary>
    [Fact]
    public void LogBucketsAndClampedDistancesAreExercised()
    {
        var (ids, _, _, _) = ArchitectureFixtures.Case("deberta-v3");
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder("deberta-v3"));
        var s = DebertaV2Architecture.SettingsOf(model.Config);
        Assert.Equal((8, 64), (s.PositionBuckets, s.MaxRelativePositions));
        long length = ids.shape[1];
        Assert.True(length > s.PositionBuckets / 2, "the texts must be longer than position_buckets / 2");
        using var rel = RelativePositions.Build(length, s.PositionBuckets, s.MaxRelativePositions, CPU);
        var plain = arange(length).unsqueeze(1) - arange(length).unsqueeze(0);
        Assert.Equal(3L, rel[3, 0].item<long>());
        Assert.Equal(6L, rel[13, 0].item<long>());
        Assert.Equal(-6L, rel[0, 13].item<long>());
        Assert.True(rel.ne(plain).any().item<bool>());

        var (ids2, _, _, _) = ArchitectureFixtures.Case("deberta-v2-separate-keys");
        using var model2 = ModelLoader.Load(ArchitectureFixtures.Folder("deberta-v2-separate-keys"));
        Assert.True(ids2.shape[1] > DebertaV2Architecture.SettingsOf(model2.Config).AttentionSpan, "the texts must be longer than the clamped span");
    }

    /// <summary>
    /// The deberta-v3 config with one field the forward does not compute is refused naming it (the refusals this
    /// branch's own model had that main's keeps; main accepts position_biased_input true and token types).
    /// </summary>
    [Theory]
    [InlineData("relative_attention", "false")]
    [InlineData("pos_att_type", "[\"c2p\", \"p2p\"]")]
    [InlineData("norm_rel_ebd", "\"batch_norm\"")]
    [InlineData("conv_kernel_size", "3")]
    [InlineData("hidden_act", "\"swish\"")]
    public void BadConfigIsRefusedNamingTheField(string field, string value)
    {
        var dir = Directory.CreateTempSubdirectory("af-deberta2nd-").FullName;
        try
        {
            var copy = ArchitectureFixtures.CopyWithConfig("deberta-v3", Path.Combine(dir, field), c => c[field] = System.Text.Json.Nodes.JsonNode.Parse(value));
            var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(copy));
            output.WriteLine(e.Message);
            Assert.Equal(field, e.Field);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>HF's older string form of pos_att_type ("p2c|c2p") reads as the list.</summary>
    [Fact]
    public void PosAttTypeStringFormReadsAsTheList()
    {
        var dir = Directory.CreateTempSubdirectory("af-deberta2nd-").FullName;
        try
        {
            var (ids, mask, l32, _) = ArchitectureFixtures.Case("deberta-v3");
            var copy = ArchitectureFixtures.CopyWithConfig("deberta-v3", Path.Combine(dir, "pipe"), c => c["pos_att_type"] = "p2c|c2p");
            using var model = ModelLoader.Load(copy);
            Assert.True((model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    public static TheoryData<string, OutputKind, Precision> DeepLiftCases() => FixtureExactness.Cases("deberta-v3", "deberta-v2-separate-keys");

    [Theory]
    [MemberData(nameof(DeepLiftCases))]
    public void DeepLiftIsExactOnPaddedBatch(string fixture, OutputKind kind, Precision precision) =>
        FixtureExactness.DeepLiftIsExactOnPaddedBatch(fixture, kind, precision, output);

    /// <summary>
    /// One reference row shared by a padded batch (every text's ids replaced by the pad id, the same for all): exact,
    /// and the same scores as the reference expanded to a row per text.
    /// </summary>
    [Theory]
    [InlineData("deberta-v3")]
    [InlineData("deberta-v2-separate-keys")]
    public void SharedReferenceRowOnPaddedBatchIsExact(string fixture) => FixtureExactness.SharedReferenceRowOnPaddedBatchIsExact(fixture, output);

    /// <summary>
    /// deberta-v3/spm.model (tests/fixtures/tokenizers/deberta/spm.model; DeBERTa-v3's plain layout [PAD]=0 [CLS]=1
    /// [SEP]=2 [UNK]=3) against python3-sentencepiece's ids with [CLS] … [SEP] on 25 sentences; then the model's logits
    /// on them against the second reference's.
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
        output.WriteLine($"deberta-v3, 25 sentences: max |logits − second reference| {diff:E2}");
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
