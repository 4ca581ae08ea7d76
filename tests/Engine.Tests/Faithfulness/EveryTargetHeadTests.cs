using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Tests.Models;
using AttributionFleet.Engine.Text;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Faithfulness;

/// <summary>
/// <c>--target all</c>, the reference check and faithfulness on the heads other than single-label: a multi-label head
/// explains each label (its logit or its sigmoid) and checks each label's sigmoid; a regression head explains each value
/// and has no probability to check (null, never NaN); a non-finite class row fails the text.
/// </summary>
public sealed class EveryTargetHeadTests
{
    private static readonly string[] Texts = { "the plot was dull but the acting was wonderful", "dull" };

    [Theory]
    [InlineData("centered-logit", "logit")]
    [InlineData("probability", "probability")]
    public void MultiLabelEveryLabelIsItsOwnRunAndItsSigmoidIsChecked(string output, string explained)
    {
        using var loaded = LoadedModel.Load(ArchitectureFixtures.Folder("bert-multi-label"), CPU);
        var explainer = new TextExplainer(loaded);
        var all = explainer.Explain(Texts, new ExplainRequest { Target = "all", Output = output, Precision = "float64" });
        int labels = loaded.Float32.OutputSize;
        for (int t = 0; t < Texts.Length; t++)
        {
            var e = all[t];
            Assert.Equal(explained, e.Output);
            Assert.Equal("multi-label", e.Prediction.Head);
            Assert.Equal(labels, e.Classes!.Count);
            var p = e.Probabilities!;
            Assert.Equal(e.Prediction.Probability, p.Max());
            Assert.Equal(Array.IndexOf(p, p.Max()), e.TargetIndex);
            for (int c = 0; c < labels; c++)
            {
                var one = explainer.Explain(new[] { Texts[t] }, new ExplainRequest { Target = c.ToString(), Output = output, Precision = "float64" })[0];
                var row = e.Classes[c];
                Assert.Equal(one.Fx, row.Fx, 1e-10);
                Assert.Equal(one.Fx0, row.Fx0, 1e-10);
                Assert.Equal(one.Scores, row.Scores, (a, b) => Math.Abs(a - b) <= 1e-10);
                Assert.True(row.RelativeDelta <= 1e-10, $"label {c}: relative delta {row.RelativeDelta:E2}");
                // The label's own sigmoid moved from the reference: the check is the same as the one-target run's.
                Assert.NotNull(row.Reference);
                Assert.Equal(one.Reference!.ProbabilityChange, row.Reference!.ProbabilityChange, 1e-12);
                Assert.Equal(Math.Abs(row.Reference.ProbabilityChange) < 0.05, row.Reference.Weak);
                Assert.InRange(p[c] - row.Reference.ProbabilityChange, 0, 1); // p(x0) is a sigmoid too
            }
        }
    }

    [Fact]
    public void RegressionEveryValueHasNoProbabilityToCheckAndFaithfulnessInOutputUnits()
    {
        using var loaded = LoadedModel.Load(ArchitectureFixtures.Folder("bert-regression"), CPU);
        var explainer = new TextExplainer(loaded);
        var all = explainer.Explain(Texts, new ExplainRequest { Target = "all", Precision = "float64", Faithfulness = true });
        foreach (var e in all)
        {
            Assert.Equal("logit", e.Output);
            Assert.Equal(loaded.Float32.OutputSize, e.Classes!.Count);
            Assert.Null(e.Probabilities);
            Assert.Null(e.Reference);
            Assert.All(e.Classes, c => Assert.Null(c.Reference));
            Assert.Equal(e.Prediction.Value!.Value, e.Fx, 1e-9);
            Assert.True(NonFinite.IsFinite(e));
            Assert.True(e.RelativeDelta <= 1e-10, $"relative delta {e.RelativeDelta:E2}");
            // No probability: faithfulness measures the value itself (p(x) is f(x)).
            Assert.Equal(e.Fx, e.Faithfulness!.Probability, 1e-9);
            Assert.All(e.Faithfulness.Comprehensiveness, v => Assert.True(double.IsFinite(v)));
        }
        var one = explainer.Explain(Texts, new ExplainRequest { Precision = "float64" });
        Assert.All(one, e => Assert.Null(e.Reference));
        var refused = Assert.Throws<AttributionRequestException>(() => explainer.Explain(Texts, new ExplainRequest { Target = "all", Output = "probability" }));
        Assert.Equal("output", refused.Field);
    }

    [Fact]
    public void ANonFiniteClassRowFailsTheText()
    {
        var e = new Explanation("a", new[] { "[CLS]", "a", "[SEP]" }, new[] { new AttributionFleet.Engine.Tokenization.TokenOffset(0, 0), new AttributionFleet.Engine.Tokenization.TokenOffset(0, 1), new AttributionFleet.Engine.Tokenization.TokenOffset(1, 0) },
            new[] { 0.0, 0.5, 0.0 }, new Prediction("p", 0, 0.9), 0, "p", "centered-logit", 1, 0.5, 0, 0, "deeplift", "exact", "float32", false);
        Assert.True(NonFinite.IsFinite(e));
        var finite = new ClassAttribution(0, "p", new[] { 0.0, 0.5, 0.0 }, 1, 0.5, 0, 0);
        Assert.True(NonFinite.IsFinite(e with { Classes = new[] { finite, finite with { TargetIndex = 1 } } }));
        Assert.False(NonFinite.IsFinite(e with { Classes = new[] { finite, finite with { TargetIndex = 1, Scores = new[] { 0.0, double.NaN, 0.0 } } } }));
        Assert.False(NonFinite.IsFinite(e with { Classes = new[] { finite, finite with { TargetIndex = 1, Fx0 = double.PositiveInfinity } } }));
        Assert.Equal(NonFinite.Status.NonFinite, NonFinite.StatusOf(e with { Classes = new[] { finite with { Delta = double.NaN } } }));
    }
}
