using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Faithfulness;

/// <summary>
/// The weak_reference flag: |p_c(x) − p_c(x0)| against its threshold, checked against independent plain forwards (the
/// explainer takes p(x0) from DeepLift's own reference half, carried or replayed from a tape, in mixed-length batches).
/// </summary>
public class ReferenceCheckTests(ThreeLabelModel fixture) : IClassFixture<ThreeLabelModel>
{
    [Theory]
    [InlineData("pad")]
    [InlineData("mask")]
    public void ProbabilityChangeIsTheTargetsChangeFromTheReference(string reference)
    {
        var explainer = new TextExplainer(fixture.Loaded);
        var texts = new[] { "the plot was dull but the acting was wonderful", "not recommend", "not good", "a film with a plot" };
        var results = explainer.Explain(texts, new ExplainRequest { Precision = "float64", References = new[] { reference } });
        var model = fixture.Loaded.For(Precision.Float64);
        for (int i = 0; i < texts.Length; i++)
        {
            var ids = explainer.Tokenize(new[] { texts[i] })[0].Ids;
            var fill = reference == "pad" ? fixture.Loaded.Tokenizer.PadId : fixture.Loaded.Tokenizer.MaskId;
            var refIds = ids.Select((id, k) => k == 0 || k == ids.Length - 1 ? id : fill).ToArray();
            var x = tensor(ids.Select(t => (long)t).ToArray()).unsqueeze(0);
            var x0 = tensor(refIds.Select(t => (long)t).ToArray()).unsqueeze(0);
            int c = results[i].TargetIndex;
            double expected = model.Logits(x, ones_like(x)).softmax(1)[0, c].item<double>() - model.Logits(x0, ones_like(x0)).softmax(1)[0, c].item<double>();
            Assert.Equal(expected, results[i].Reference!.ProbabilityChange, 12);
            Assert.Equal(0.05, results[i].Reference!.Threshold);
            Assert.Equal(Math.Abs(expected) < 0.05, results[i].Reference!.Weak);
        }
    }

    [Fact]
    public void ThresholdIsConfigurableAndChecked()
    {
        var explainer = new TextExplainer(fixture.Loaded);
        var texts = new[] { "the plot was dull but the acting was wonderful" };
        Assert.True(explainer.Explain(texts, new ExplainRequest { WeakReferenceThreshold = 1 })[0].Reference!.Weak);
        Assert.False(explainer.Explain(texts, new ExplainRequest { WeakReferenceThreshold = 0 })[0].Reference!.Weak);
        var e = Assert.Throws<AttributionRequestException>(() => explainer.Explain(texts, new ExplainRequest { WeakReferenceThreshold = -1 }));
        Assert.Equal("weak_reference_threshold", e.Field);
    }

    [Fact]
    public void ATextThatIsItsReferenceIsWeak()
    {
        // "[PAD]" typed in is not the pad token, so use the reference text itself as a custom reference.
        const string text = "the plot was dull";
        var result = new TextExplainer(fixture.Loaded).Explain(new[] { text }, new ExplainRequest { References = new[] { text } })[0];
        // float32: both probabilities come from DeepLift's pass, the text's half and the reference's (rounding apart).
        Assert.InRange(result.Reference!.ProbabilityChange, -1e-6, 1e-6);
        Assert.True(result.Reference.Weak);
    }
}
