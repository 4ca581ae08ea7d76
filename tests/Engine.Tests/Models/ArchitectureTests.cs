using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>
/// Every family on the seam against its PyTorch reference (tests/fixtures/architectures): padded batches, logits within
/// 1e-5 (float32) and 1e-9 (float64), and exact DeepLift (float64 relative delta ≤ 1e-10, float32 within 1e-4 of the
/// output's scale, as for the other families), with non-trivial scores and padded positions at exactly 0.
/// </summary>
public sealed class ArchitectureTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-arch-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("bert-no-architectures", "BertForSequenceClassification", HeadKind.BertPooler)]
    [InlineData("bert-multi-label", "BertForSequenceClassification", HeadKind.BertPooler)]
    [InlineData("bert-regression", "BertForSequenceClassification", HeadKind.BertPooler)]
    [InlineData("electra", "ElectraForSequenceClassification", HeadKind.ElectraClassificationHead)]
    [InlineData("xlm-roberta", "XLMRobertaForSequenceClassification", HeadKind.RobertaClassificationHead)]
    public void LogitsMatchPyTorchReference(string fixture, string architecture, HeadKind head)
    {
        var (ids, mask, l32, l64) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture));
        Assert.Equal(architecture, model.Config.Architecture);
        Assert.Equal(head, model.Config.Head);
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>();
        using var model64 = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: ScalarType.Float64);
        double diff64 = (model64.Logits(ids, mask) - l64).abs().max().item<double>();
        output.WriteLine($"{fixture}: float32 max |logits − reference| {diff:E2}, float64 {diff64:E2}");
        Assert.True(l64.abs().max().item<double>() > 0.1, "reference logits should not be trivially small");
        Assert.True(diff <= 1e-5, $"float32 max diff {diff:E3}");
        Assert.True(diff64 <= 1e-9, $"float64 max diff {diff64:E3}");
    }

    /// <summary>25 varied sentences as XLM-R ids (SentencePiece's, with fairseq's offset; tokenizer_case.json), padded.</summary>
    [Fact]
    public void XlmRobertaOnSentencePieceIdsMatchesReference()
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(ArchitectureFixtures.Folder("xlm-roberta"), "tokenizer_case.json")));
        var c = doc.RootElement;
        var ids = tensor(Support.Json.Long2(c.GetProperty("input_ids")));
        var mask = tensor(Support.Json.Long2(c.GetProperty("attention_mask")));
        Assert.Equal(25, ids.shape[0]);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder("xlm-roberta"));
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - tensor(Support.Json.Double2(c.GetProperty("logits_f32")))).abs().max().item<double>();
        output.WriteLine($"xlm-roberta, 25 sentences: max |logits − reference| {diff:E2}");
        Assert.True(diff <= 1e-5, $"max diff {diff:E3}");
    }

    [Fact]
    public void ElectraProjectsEmbeddingsWhenEmbeddingSizeDiffers()
    {
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder("electra"));
        Assert.Equal(16, model.Config.EmbeddingSize);
        Assert.Equal(32, model.Config.HiddenSize);
        Assert.Equal(new long[] { 32, 16 }, model.Weights["proj"].shape);
        Assert.Equal(16, model.WordEmbeddings(tensor(new long[,] { { 2, 7, 3 } })).shape[2]);
    }

    /// <summary>Texts through the explainer (WordPiece tokenizer, 16-wide word embeddings, every reference kind).</summary>
    [Theory]
    [InlineData("pad")]
    [InlineData("mask")]
    [InlineData("zero")]
    public void ElectraExplainsTextsExactly(string reference)
    {
        using var loaded = Text.LoadedModel.Load(ArchitectureFixtures.Folder("electra"), CPU);
        var texts = new[] { "the plot was dull but the acting was wonderful", "fast delivery and great battery", "bad movie" };
        var results = new Text.TextExplainer(loaded).Explain(texts, new Text.ExplainRequest { Precision = "float64", References = new[] { reference } });
        foreach (var e in results)
        {
            output.WriteLine($"{reference}: {e.Text}: f(x) {e.Fx:F4} f(x0) {e.Fx0:F4} relative delta {e.RelativeDelta:E2}");
            Assert.True(e.RelativeDelta <= 1e-10, $"relative delta {e.RelativeDelta:E2}");
            Assert.True(e.Scores.Max(Math.Abs) > 1e-4);
            Assert.Equal("centered-logit", e.Output);
        }
    }

    [Fact]
    public void ElectraWithoutArchitecturesResolvesFromModelType()
    {
        var dir = ArchitectureFixtures.CopyWithConfig("electra", Path.Combine(_dir, "electra"), c => c.Remove("architectures"));
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("electra");
        using var model = ModelLoader.Load(dir);
        Assert.Equal("ElectraForSequenceClassification", model.Config.Architecture);
        Assert.True((model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);
    }

    public static TheoryData<string, OutputKind, Precision> DeepLiftCases()
    {
        var data = new TheoryData<string, OutputKind, Precision>();
        foreach (var f in new[] { "electra", "xlm-roberta" })
            foreach (var o in new[] { OutputKind.Logit, OutputKind.CenteredLogit, OutputKind.Probability })
                foreach (var p in new[] { Precision.Float64, Precision.Float32 })
                    data.Add(f, o, p);
        data.Add("bert-multi-label", OutputKind.Logit, Precision.Float64);
        data.Add("bert-multi-label", OutputKind.SigmoidProbability, Precision.Float64);
        data.Add("bert-multi-label", OutputKind.SigmoidProbability, Precision.Float32);
        data.Add("bert-regression", OutputKind.Logit, Precision.Float64);
        data.Add("bert-regression", OutputKind.Logit, Precision.Float32);
        return data;
    }

    [Theory]
    [MemberData(nameof(DeepLiftCases))]
    public void DeepLiftIsExactOnPaddedBatch(string fixture, OutputKind kind, Precision precision)
    {
        var dtype = precision == Precision.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var (ids, mask, _, _) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: dtype);
        var reference = ReferenceIds(ids, mask, model.Config);
        long target = model.OutputSize - 1;
        var batch = new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(reference) }, Enumerable.Repeat(target, (int)ids.shape[0]).ToArray());
        var result = new DeepLift().Attribute(model, batch, new MethodOptions { Output = kind });

        double delta = result.Delta.abs().max().item<double>();
        double scale = maximum(result.Fx.abs(), result.Fx0.abs()).max().item<double>();
        double change = (result.Fx - result.Fx0).abs().min().item<double>();
        double scores = result.Scores.abs().max().item<double>();
        output.WriteLine($"{fixture} {kind} {precision}: max|delta| {delta:E2}, max relative delta {(result.Delta.abs() / (result.Fx - result.Fx0).abs()).max().item<double>():E2}, min|f(x)−f(x0)| {change:E2}, max|score| {scores:E2}");
        Assert.True(change > 1e-4, "the test needs f(x) != f(x0)");
        Assert.True(scores > 1e-4, "scores should not be all zero");
        if (precision == Precision.Float64) Assert.True(delta / change <= 1e-10, $"relative delta {delta / change:E2}");
        else Assert.True(delta <= 1e-4 * scale, $"|delta| {delta:E2} > 1e-4 × {scale:E2}");
        Assert.Equal(0.0, result.Scores.masked_select(mask.logical_not()).abs().max().item<double>());
    }

    /// <summary>The [PAD] reference: every real token but the first and last replaced by the pad id; padding kept.</summary>
    internal static Tensor ReferenceIds(Tensor ids, Tensor mask, ModelConfig config)
    {
        var r = ids.clone();
        for (long i = 0; i < ids.shape[0]; i++)
        {
            long n = mask[i].sum().item<long>();
            for (long j = 1; j < n - 1; j++) r[i, j] = config.PadTokenId;
        }
        return r;
    }
}
