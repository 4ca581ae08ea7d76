using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Faithfulness;

/// <summary>A random 3-label BERT (stress init: logits of order 1) with a small word vocabulary, saved and loaded back.</summary>
public sealed class ThreeLabelModel : IDisposable
{
    public static readonly string[] Words = { "the", "plot", "was", "dull", "but", "acting", "wonderful", "not", "recommend", "fast", "battery", "lasts" };
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "fleet-3label-" + Guid.NewGuid().ToString("N"));
    public LoadedModel Loaded { get; }

    public ThreeLabelModel()
    {
        Directory.CreateDirectory(_dir);
        var config = RandomModels.BertConfig(layers: 2, hidden: 32, heads: 4, intermediate: 64, vocab: 300, labels: 3, maxPositions: 64)
            with { Labels = new List<string> { "negative", "neutral", "positive" } };
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), Enumerable.Range(0, config.VocabSize).Select(i => i switch
        {
            0 => "[PAD]", 100 => "[UNK]", 101 => "[CLS]", 102 => "[SEP]", 103 => "[MASK]",
            >= 200 when i - 200 < Words.Length => Words[i - 200],
            _ => $"[unused{i}]",
        }));
        using (var model = RandomModels.Create(config, seed: 7, std: 0.5, stress: true)) RandomModels.Save(model, _dir);
        Loaded = LoadedModel.Load(_dir, CPU);
    }

    public void Dispose()
    {
        Loaded.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary><c>--target all</c> gives, for every class, exactly what naming that class as the target gives.</summary>
public class EveryTargetTests(ThreeLabelModel fixture) : IClassFixture<ThreeLabelModel>
{
    private static readonly string[] Texts =
    {
        "the plot was dull but the acting was wonderful", "not recommend", "fast battery lasts", "the battery was not dull",
    };

    [Theory]
    [InlineData("deeplift", "centered-logit", "exact")]
    [InlineData("deeplift", "probability", "exact")]
    [InlineData("deeplift", "logit", "rescale")]
    [InlineData("saliency", "centered-logit", "exact")]
    [InlineData("deeplift-shap", "centered-logit", "exact")]
    public void EveryTargetEqualsEachTargetRunSeparately(string method, string output, string rule)
    {
        var explainer = new TextExplainer(fixture.Loaded);
        var request = new ExplainRequest
        {
            Method = method, Output = output, SoftmaxRule = rule, Precision = "float64", BatchSize = 3,
            References = method == "deeplift-shap" ? new[] { "pad", "mask" } : new[] { "pad" },
        };
        var all = explainer.Explain(Texts, request with { Target = "all" });
        // Target all takes texts in one-length batches; so do these, to compare like with like to the last bit (padded
        // batches agree to rounding, and the rescale rule amplifies rounding).
        var oneLength = new TextExplainer(fixture.Loaded) { CostModel = new BucketCostModel { ReferenceRow = 1e9 } };
        var separately = Enumerable.Range(0, 3).Select(c => oneLength.Explain(Texts, request with { Target = c.ToString() })).ToList();
        for (int i = 0; i < Texts.Length; i++)
        {
            var classes = all[i].Classes!;
            Assert.Equal(3, classes.Count);
            for (int c = 0; c < 3; c++)
            {
                var one = separately[c][i];
                Assert.Equal(c, classes[c].TargetIndex);
                Assert.Equal(one.TargetLabel, classes[c].TargetLabel);
                Assert.Equal(one.Scores.Length, classes[c].Scores.Length);
                for (int k = 0; k < one.Scores.Length; k++) Assert.True(Math.Abs(one.Scores[k] - classes[c].Scores[k]) <= 1e-12, $"text {i} class {c} token {k}");
                Assert.True(Math.Abs(one.Fx - classes[c].Fx) <= 1e-12, "f(x)");
                Assert.True(Math.Abs(one.Fx0 - classes[c].Fx0) <= 1e-12, "f(x0)");
                Assert.True(Math.Abs(one.Delta - classes[c].Delta) <= 1e-12, "delta");
                Assert.Equal(one.Reference!.ProbabilityChange, classes[c].Reference!.ProbabilityChange, 12);
            }
            // The top-level row is the predicted class's.
            Assert.Equal(all[i].Prediction.Index, all[i].TargetIndex);
            Assert.Equal(classes[all[i].TargetIndex].Scores, all[i].Scores);
            Assert.Equal(separately[0][i].Prediction, all[i].Prediction);
        }
    }

    [Fact]
    public void OnePassSplitIntoPassesOfOneTextGivesTheSameRows()
    {
        var model = fixture.Loaded.For(Precision.Float64);
        var explainer = new TextExplainer(fixture.Loaded);
        var tokenized = explainer.Tokenize(new[] { "the plot was dull", "the acting was wonderful", "fast battery lasts long" });
        Assert.All(tokenized, t => Assert.Equal(tokenized[0].Ids.Length, t.Ids.Length));
        var ids = tensor(tokenized.SelectMany(t => t.Ids.Select(i => (long)i)).ToArray()).reshape(3, -1);
        var reference = explainer.ReferenceEmbeddings("pad", (int)ids.shape[1], model);
        var batch = new AttributionBatch(ids, ones_like(ids), new[] { reference }, null);
        var whole = EveryTarget.Attribute(new DeepLift(), model, batch, new MethodOptions());
        var split = EveryTarget.Attribute(new DeepLift(), model, batch, new MethodOptions { PassMemoryBytes = 1 });
        for (int c = 0; c < 3; c++)
        {
            Assert.True((whole[c].Scores - split[c].Scores).abs().max().item<double>() <= 1e-12);
            Assert.Equal(Enumerable.Repeat((long)c, 3), split[c].Targets);
            Assert.True(split[c].Delta.abs().max().item<double>() <= 1e-12, "exact rules add up for every class");
        }
    }

    [Fact]
    public void TargetAllOnAModelWithoutClassifierIsRefusedNamingTheField()
    {
        var e = Assert.Throws<AttributionRequestException>(() =>
            EveryTargetRequestOnEncoder());
        Assert.Equal("target", e.Field);
    }

    private static void EveryTargetRequestOnEncoder()
    {
        var dir = Path.Combine(Path.GetTempPath(), "fleet-encoder-" + Guid.NewGuid().ToString("N"));
        try
        {
            var config = RandomModels.BertConfig(layers: 1, hidden: 16, heads: 2, intermediate: 32, vocab: 1000, labels: 0, maxPositions: 64, architecture: "BertModel");
            using (var m = RandomModels.Create(config)) RandomModels.Save(m, dir);
            using var loaded = LoadedModel.Load(dir, CPU);
            new TextExplainer(loaded).Explain(new[] { "tok1001" }, new ExplainRequest { Target = "all" });
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
