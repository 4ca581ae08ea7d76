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
/// DebertaV2ForSequenceClassification (tests/fixtures/architectures/deberta-v2, made by generate_deberta_v2.py from
/// the project's PyTorch reference of modeling_deberta_v2.py): 2 layers, position_buckets 8 with texts of up to 40
/// tokens (log buckets and clamped distances), share_att_key, c2p + p2c, LayerNorm'd relative embeddings, padded
/// batches. Logits against PyTorch, exact DeepLift, SentencePiece ids against python3-sentencepiece.
/// </summary>
public sealed class DebertaV2Tests(ITestOutputHelper output) : IDisposable
{
    private const string Fixture = "deberta-v2";
    private const string OptionsFixture = "deberta-v2-options";
    private readonly string _dir = Directory.CreateTempSubdirectory("af-deberta-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static JsonElement ReadJson(string file)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ArchitectureFixtures.Folder(Fixture), file)));
        return doc.RootElement.Clone();
    }

    [Fact]
    public void ConfigReadsTheV3Settings()
    {
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(Fixture));
        Assert.Equal("DebertaV2ForSequenceClassification", model.Config.Architecture);
        Assert.Equal(HeadKind.ContextPooler, model.Config.Head);
        var s = DebertaV2Architecture.SettingsOf(model.Config);
        Assert.Equal(new DebertaV2Settings(PositionBiasedInput: false, RelativeAttention: true, PositionBuckets: 8, MaxRelativePositions: 64,
            ContentToPosition: true, PositionToContent: true, ShareAttentionKey: true, NormalizeRelativeEmbeddings: true, PoolerActivation: "gelu"), s);
        Assert.Equal(3, s.ScaleFactor);
        Assert.Equal(new[] { "entailment", "neutral", "contradiction" }, model.Config.Labels);
    }

    /// <summary>The other settings the loader accepts: absolute positions, token types, embed_proj, unbucketed clamped distances, pos_key_proj / pos_query_proj, no rel LayerNorm.</summary>
    [Fact]
    public void ConfigReadsTheV2StyleOptions()
    {
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(OptionsFixture));
        var s = DebertaV2Architecture.SettingsOf(model.Config);
        Assert.Equal(new DebertaV2Settings(PositionBiasedInput: true, RelativeAttention: true, PositionBuckets: -1, MaxRelativePositions: 6,
            ContentToPosition: true, PositionToContent: true, ShareAttentionKey: false, NormalizeRelativeEmbeddings: false, PoolerActivation: "tanh"), s);
        Assert.Equal((16, 32, 2, "gelu_new"), (model.Config.EmbeddingSize, model.Config.HiddenSize, model.Config.TypeVocabSize, model.Config.HiddenAct));
        Assert.True(model.Weights.ContainsKey("L1.pk") && model.Weights.ContainsKey("L1.pq") && model.Weights.ContainsKey("proj"));
    }

    [Theory]
    [InlineData(Fixture)]
    [InlineData(OptionsFixture)]
    public void LogitsMatchPyTorchReferenceOnPaddedBatch(string fixture)
    {
        var (ids, mask, l32, l64) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture));
        Assert.True(ids.shape[1] > 2 * DebertaV2Architecture.SettingsOf(model.Config).AttentionSpan,
            "texts must be longer than the relative span (log buckets past position_buckets / 2, clamped distances past the span)");
        Assert.False(mask.all().item<bool>(), "the batch must be padded");
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>();
        using var model64 = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: ScalarType.Float64);
        double diff64 = (model64.Logits(ids, mask) - l64).abs().max().item<double>();
        output.WriteLine($"{fixture}: float32 max |logits − reference| {diff:E2}, float64 {diff64:E2}, max |logit| {l64.abs().max().item<double>():F3}");
        Assert.True(l64.abs().max().item<double>() > 0.1, "reference logits should not be trivially small");
        Assert.True(diff <= 1e-5, $"float32 max diff {diff:E3}");
        Assert.True(diff64 <= 1e-9, $"float64 max diff {diff64:E3}");
    }

    /// <summary>A padded text's logits equal the same text's alone (padding changes nothing, as in HF).</summary>
    [Fact]
    public void PaddingDoesNotChangeLogits()
    {
        var (ids, mask, _, _) = ArchitectureFixtures.Case(Fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(Fixture), dtype: ScalarType.Float64);
        var batch = model.Logits(ids, mask);
        for (long i = 0; i < ids.shape[0]; i++)
        {
            long n = mask[i].sum().item<long>();
            var alone = model.Logits(ids[i].narrow(0, 0, n).unsqueeze(0), mask[i].narrow(0, 0, n).unsqueeze(0));
            Assert.True((alone[0] - batch[i]).abs().max().item<double>() <= 1e-12);
        }
    }

    /// <summary>make_log_bucket_position for every distance: this fixture's config and DeBERTa-v3-base's (256 buckets, 512 positions).</summary>
    [Fact]
    public void RelativePositionBucketsMatchPyTorch()
    {
        foreach (var table in ReadJson("buckets.json").EnumerateArray())
        {
            int buckets = table.GetProperty("position_buckets").GetInt32(), max = table.GetProperty("max_relative_positions").GetInt32();
            long length = table.GetProperty("length").GetInt64();
            var expected = table.GetProperty("bucket_of_distance").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            using var built = RelativePositions.Build(length, buckets, max, CPU);
            var distances = arange(-(length - 1), length, dtype: ScalarType.Int64);
            var actual = RelativePositions.LogBucket(distances, buckets, max).data<long>().ToArray();
            Assert.Equal(expected, actual);
            // The [L, L] table the model uses holds bucket(i − j).
            var ids = arange(length, dtype: ScalarType.Int64);
            var lookup = tensor(expected).index_select(0, (ids.unsqueeze(1) - ids.unsqueeze(0) + length - 1).reshape(-1)).reshape(length, length);
            Assert.True(built.eq(lookup).all().item<bool>(), $"[L, L] table differs for {buckets} buckets");
            Assert.Contains(expected, b => Math.Abs(b) > buckets / 2); // the log branch is exercised
            output.WriteLine($"buckets {buckets}, max {max}: {expected.Length} distances equal; largest bucket {expected.Max()}");
        }
    }

    /// <summary>25 varied sentences: ids equal python3-sentencepiece's ([CLS] + encode_as_ids + [SEP]) and the logits PyTorch's.</summary>
    [Fact]
    public void TokenizerIdsMatchSentencePieceAndLogitsMatchOnThem()
    {
        var c = ReadJson("tokenizer_case.json");
        var sentences = c.GetProperty("sentences").EnumerateArray().Select(e => e.GetString()!).ToArray();
        var expected = c.GetProperty("ids").EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToArray();
        Assert.Equal(25, sentences.Length);
        var tokenizer = TokenizerLoader.Load(ArchitectureFixtures.Folder(Fixture), "deberta-v2");
        Assert.Equal((0, 1, 2, 3), (tokenizer.PadId, tokenizer.StartId, tokenizer.EndId, tokenizer.UnkId));
        Assert.Equal("[MASK]", tokenizer.IdToToken(tokenizer.MaskId));
        for (int i = 0; i < sentences.Length; i++)
            Assert.Equal(expected[i], tokenizer.Encode(sentences[i], 512).Ids);

        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = tensor(Json.Long2(c.GetProperty("attention_mask")));
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(Fixture));
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - tensor(Json.Double2(c.GetProperty("logits_f32")))).abs().max().item<double>();
        output.WriteLine($"deberta-v2, 25 sentences of up to {ids.shape[1]} tokens: max |logits − reference| {diff:E2}");
        Assert.True(diff <= 1e-5, $"max diff {diff:E3}");
    }

    public static TheoryData<string, OutputKind, Precision> DeepLiftCases() => FixtureExactness.Cases(Fixture, OptionsFixture);

    [Theory]
    [MemberData(nameof(DeepLiftCases))]
    public void DeepLiftIsExactOnPaddedBatch(string fixture, OutputKind kind, Precision precision) =>
        // Every label once, so that no target's delta hides another's.
        FixtureExactness.DeepLiftIsExactOnPaddedBatch(fixture, kind, precision, output,
            (model, n) => Enumerable.Range(0, n).Select(i => (long)(i % model.OutputSize)).ToArray());

    /// <summary>Texts through the explainer, as `fleet explain --model tests/fixtures/architectures/deberta-v2` runs them.</summary>
    [Theory]
    [InlineData("pad")]
    [InlineData("mask")]
    public void ExplainsTextsExactlyThroughTheExplainer(string reference)
    {
        using var loaded = Text.LoadedModel.Load(ArchitectureFixtures.Folder(Fixture), CPU);
        var texts = new[] { "You may convey verbatim copies of the Program's source code, and the license grants permission.", "Hello world.", "El niño comió piña." };
        var results = new Text.TextExplainer(loaded).Explain(texts, new Text.ExplainRequest { Precision = "float64", References = new[] { reference } });
        foreach (var e in results)
        {
            output.WriteLine($"{reference}: {e.Text}: f(x) {e.Fx:F4} f(x0) {e.Fx0:F4} relative delta {e.RelativeDelta:E2}, {e.Scores.Length} tokens");
            Assert.True(e.RelativeDelta <= 1e-10, $"relative delta {e.RelativeDelta:E2}");
            Assert.True(e.Scores.Max(Math.Abs) > 1e-4);
            Assert.Equal("centered-logit", e.Output);
        }
        Assert.True(results[0].Scores.Length > 8, "the first text must be longer than position_buckets / 2");
    }

    [Theory]
    [InlineData("conv_kernel_size", "3")]
    [InlineData("pos_att_type", "\"p2p|c2p\"")]
    [InlineData("pooler_hidden_size", "16")]
    [InlineData("share_att_key", "\"yes\"")]
    [InlineData("relative_attention", "false")]
    [InlineData("norm_rel_ebd", "\"layer_norm|batch_norm\"")]
    public void ConfigsTheForwardWouldComputeWronglyAreRefusedByField(string field, string json)
    {
        var dir = ArchitectureFixtures.CopyWithConfig(Fixture, Path.Combine(_dir, field), c => c[field] = System.Text.Json.Nodes.JsonNode.Parse(json));
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        output.WriteLine(e.Message);
        Assert.Contains(field, e.Message);
        Assert.Equal(field, e.Field);
    }

    /// <summary>DebertaV2Tokenizer options the SentencePiece pipeline does not apply are refused, naming the field, not ignored.</summary>
    [Theory]
    [InlineData("split_by_punct")]
    [InlineData("do_lower_case")]
    public void TokenizerOptionsNotAppliedAreRefused(string field)
    {
        var dir = Path.Combine(_dir, "tok-" + field);
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(ArchitectureFixtures.Folder(Fixture), "spm.model"), Path.Combine(dir, "spm.model"));
        var settings = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(ArchitectureFixtures.Folder(Fixture), "tokenizer_config.json")))!.AsObject();
        settings[field] = true;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), settings.ToJsonString());
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(dir, "deberta-v2"));
        output.WriteLine(e.Message);
        Assert.Equal(field, e.Field);
        settings[field] = false;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), settings.ToJsonString());
        Assert.Equal(new[] { 1, 2 }, TokenizerLoader.Load(dir, "deberta-v2").Encode("", 16).Ids);
    }

    [Fact]
    public void WithoutArchitecturesResolvesFromModelTypeAndWeights()
    {
        var dir = ArchitectureFixtures.CopyWithConfig(Fixture, Path.Combine(_dir, "no-arch"), c => c.Remove("architectures"));
        var (ids, mask, l32, _) = ArchitectureFixtures.Case(Fixture);
        using var model = ModelLoader.Load(dir);
        Assert.Equal("DebertaV2ForSequenceClassification", model.Config.Architecture);
        Assert.True((model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);
    }
}
