using AttributionFleet.Engine.Faithfulness;
using AttributionFleet.Engine.Text;
using Xunit;

namespace AttributionFleet.Engine.Tests.Faithfulness;

/// <summary>
/// Comprehensiveness, sufficiency and both AOPCs on the linear bag-of-words model, against values computed by hand
/// from its closed form (<see cref="BagOfWordsModel"/>): p(positive) = σ(bias₁ − bias₀ + Σ_kept v(word) / L).
/// </summary>
public class FaithfulnessClosedFormTests(BagOfWordsModel bow) : IClassFixture<BagOfWordsModel>
{
    private static readonly ExplainRequest Request = new() { Target = "positive", Precision = "float64", Faithfulness = true };

    [Theory]
    [InlineData("great movie but awful acting and fine music", "positive")]
    [InlineData("bad movie and awful music but good acting", "negative")]
    [InlineData("fine", "positive")]
    public void MetricsEqualTheClosedForm(string text, string target)
    {
        var e = new TextExplainer(bow.Loaded).Explain(new[] { text }, Request with { Target = target })[0];
        var words = text.Split(' ');
        int n = words.Length, length = n + 2;
        Assert.Equal(length, e.Tokens.Length);
        // The scores themselves (centered logit of a 2-class model: ±(z₁ − z₀)/2 against the all-[PAD] reference).
        double sign = target == "positive" ? 1 : -1;
        for (int i = 0; i < n; i++)
            Assert.Equal(sign * (BagOfWordsModel.Value(words[i]) - BagOfWordsModel.Value("[PAD]")) / (2 * length), e.Scores[i + 1], 12);
        Assert.Equal(0, e.Scores[0]);
        Assert.InRange(e.RelativeDelta, 0, 1e-12);

        // By hand: rank the words by v (for class 0 by −v), remove the top ones, read p.
        double P(IEnumerable<string> kept)
        {
            double p1 = BagOfWordsModel.ProbabilityOfPositive(kept.ToList(), n);
            return target == "positive" ? p1 : 1 - p1;
        }
        var ranked = words.Select((w, i) => (w, i)).OrderByDescending(p => sign * BagOfWordsModel.Value(p.w)).ThenBy(p => p.i).Select(p => p.w).ToList();
        double px = P(words);
        var f = e.Faithfulness!;
        Assert.Equal(px, f.Probability, 12);
        var tokens = new[] { 0.01, 0.05, 0.10, 0.20 }.Select(k => Math.Min(n, Math.Max(1, (int)Math.Ceiling(k * n - 1e-9)))).ToArray();
        Assert.Equal(tokens, f.Tokens);
        for (int j = 0; j < tokens.Length; j++)
        {
            Assert.Equal(px - P(ranked.Skip(tokens[j])), f.Comprehensiveness[j], 12);
            Assert.Equal(px - P(ranked.Take(tokens[j])), f.Sufficiency[j], 12);
        }
        int segments = Math.Min(n, 20);
        var points = Enumerable.Range(0, segments + 1).Select(j => (int)Math.Round((double)j * n / segments, MidpointRounding.AwayFromZero)).ToList();
        Assert.Equal(points.Average(k => px - P(ranked.Skip(k))), f.AopcDeletion, 12);
        Assert.Equal(points.Average(k => P(ranked.Take(k)) - P(Array.Empty<string>())), f.AopcInsertion, 12);
        Assert.Equal(segments + 1, f.CurvePoints);
        Assert.True(f.PerturbedInputs >= 2 && f.PerturbedInputs <= 2 + 2 * tokens.Length + 2 * (segments + 1), $"{f.PerturbedInputs} inputs");
        Assert.True(f.Milliseconds >= 0);
        // Removing the top word lowers p exactly when that word scores above the [PAD] it is replaced by.
        Assert.Equal(Math.Sign(sign * (BagOfWordsModel.Value(ranked[0]) - BagOfWordsModel.Value("[PAD]"))), Math.Sign(f.Comprehensiveness[0]));
    }

    [Fact]
    public void ScoresInReverseOrderAreLessFaithful()
    {
        var explainer = new TextExplainer(bow.Loaded);
        const string text = "great movie but awful acting and fine music";
        var e = explainer.Explain(new[] { text }, Request)[0];
        var tokenized = explainer.Tokenize(new[] { text, text });
        var model = bow.Loaded.For(Engine.Attribution.Precision.Float64);
        var results = new FaithfulnessEvaluator(explainer, model, Request)
            .Evaluate(tokenized, new[] { e.Scores, e.Scores.Select(s => -s).ToArray() }, new[] { 1, 1 });
        Assert.True(results[0]!.AopcDeletion > results[1]!.AopcDeletion, "deletion AOPC");
        Assert.True(results[0]!.AopcInsertion > results[1]!.AopcInsertion, "insertion AOPC");
        Assert.True(results[0]!.SufficiencyMean < results[1]!.SufficiencyMean, "sufficiency");
        Assert.Equal(e.Faithfulness!.AopcDeletion, results[0]!.AopcDeletion, 12);
    }

    [Fact]
    public void PerturbedInputsAreBatchedAcrossPassesWithTheSameResult()
    {
        var explainer = new TextExplainer(bow.Loaded);
        var texts = new[] { "great movie but awful acting", "bad movie and awful music but good acting", "fine music" };
        var model = bow.Loaded.For(Engine.Attribution.Precision.Float64);
        var explained = explainer.Explain(texts, Request);
        var tokenized = explainer.Tokenize(texts);
        var scores = explained.Select(x => x.Scores).ToList();
        var targets = explained.Select(x => x.TargetIndex).ToList();
        var onePass = new FaithfulnessEvaluator(explainer, model, Request) { RowsPerPass = 1000 }.Evaluate(tokenized, scores, targets);
        var tiny = new FaithfulnessEvaluator(explainer, model, Request) { RowsPerPass = 3 }.Evaluate(tokenized, scores, targets);
        for (int i = 0; i < texts.Length; i++)
        {
            Assert.Equal(onePass[i]!.Comprehensiveness, tiny[i]!.Comprehensiveness);
            Assert.Equal(onePass[i]!.AopcInsertion, tiny[i]!.AopcInsertion);
            Assert.Equal(explained[i].Faithfulness!.Sufficiency, onePass[i]!.Sufficiency);
        }
    }
}
