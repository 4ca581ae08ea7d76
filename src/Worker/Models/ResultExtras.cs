using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Faithfulness;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Worker.Models;

/// <summary>
/// Issue #16's parts of a result in message form: every class's row (target "all"), faithfulness per text, and the
/// per-job faithfulness summary the collector publishes in <see cref="AttributionJobCompleted"/>.
/// </summary>
public static class ResultExtras
{
    public static IReadOnlyList<ClassAttributionRow>? Classes(Explanation e) => e.Classes?.Select(c => new ClassAttributionRow
    {
        TargetIndex = c.TargetIndex,
        TargetLabel = c.TargetLabel,
        Scores = c.Scores,
        Fx = c.Fx,
        Fx0 = c.Fx0,
        Delta = c.Delta,
        RelativeDelta = c.RelativeDelta,
        WeakReference = c.Reference?.Weak,
        ProbabilityChange = c.Reference?.ProbabilityChange,
    }).ToList();

    public static TextFaithfulness? Faithfulness(FaithfulnessResult? f) => f is null ? null : new TextFaithfulness
    {
        Fractions = f.Fractions,
        Tokens = f.Tokens,
        Comprehensiveness = f.Comprehensiveness,
        Sufficiency = f.Sufficiency,
        ComprehensivenessMean = f.ComprehensivenessMean,
        SufficiencyMean = f.SufficiencyMean,
        AopcDeletion = f.AopcDeletion,
        AopcInsertion = f.AopcInsertion,
        CurvePoints = f.CurvePoints,
        Probability = f.Probability,
        PerturbedInputs = f.PerturbedInputs,
        Milliseconds = f.Milliseconds,
    };

    /// <summary>Mean, p5 and p95 of each metric over the texts that carry faithfulness; null when none does.</summary>
    public static JobFaithfulnessSummary? Summarize(IReadOnlyCollection<TextFaithfulness> texts)
    {
        if (texts.Count == 0) return null;
        static MetricSummary Of(IEnumerable<double> values)
        {
            var s = Summary.Of(values);
            return s is null ? new MetricSummary() : new MetricSummary { Count = s.Count, Mean = s.Mean, P5 = s.P5, P95 = s.P95 };
        }
        return new JobFaithfulnessSummary
        {
            Comprehensiveness = Of(texts.Select(t => t.ComprehensivenessMean)),
            Sufficiency = Of(texts.Select(t => t.SufficiencyMean)),
            AopcDeletion = Of(texts.Select(t => t.AopcDeletion)),
            AopcInsertion = Of(texts.Select(t => t.AopcInsertion)),
            PerturbedInputs = texts.Sum(t => (long)t.PerturbedInputs),
        };
    }
}
