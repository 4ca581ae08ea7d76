using System.Globalization;
using AttributionFleet.Engine.Faithfulness;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Report;

/// <summary>
/// The parts of an explanation that issue #16 added, as JSON objects and terminal lines: every class's row
/// (<c>--target all</c>), the reference check (<c>weak_reference</c>) and faithfulness (<c>--faithfulness</c>).
/// </summary>
public static class ExplanationExtras
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private static double? N(double v) => NonFinite.OrNull(v);
    private static double? N(double? v) => v is double d ? NonFinite.OrNull(d) : null;

    /// <summary>
    /// One row per class (null without <c>--target all</c>); non-finite numbers are null, as everywhere in the JSON.
    /// <c>weak_reference</c> and <c>probability_change</c> are null where there is no probability to move (a regression
    /// value) or it is not finite.
    /// </summary>
    public static object? ClassesJson(Explanation e) => ClassesJson(e.Classes?.Select(c =>
        new ClassRow(c.TargetIndex, c.TargetLabel, c.Scores, c.Fx, c.Fx0, c.Delta, c.RelativeDelta, c.Reference?.Weak, c.Reference?.ProbabilityChange)));

    /// <summary>The fleet's rows (<see cref="Contracts.V1.ClassAttributionRow"/>) in the same shape.</summary>
    public static object? ClassesJson(IEnumerable<Contracts.V1.ClassAttributionRow>? rows) => ClassesJson(rows?.Select(c =>
        new ClassRow(c.TargetIndex, c.TargetLabel, c.Scores, c.Fx, c.Fx0, c.Delta, c.RelativeDelta, c.WeakReference, c.ProbabilityChange)));

    private sealed record ClassRow(int Index, string Label, IReadOnlyList<double> Scores, double Fx, double Fx0, double Delta, double RelativeDelta, bool? Weak, double? Change);

    private static object? ClassesJson(IEnumerable<ClassRow>? rows) => rows?.Select(c => new
    {
        target = new { label = c.Label, index = c.Index },
        scores = NonFinite.OrNull(c.Scores),
        f_x = N(c.Fx),
        f_x0 = N(c.Fx0),
        delta = N(c.Delta),
        relative_delta = N(c.RelativeDelta),
        weak_reference = c.Change is double d && double.IsFinite(d) ? c.Weak : null,
        probability_change = N(c.Change),
    }).ToList();

    public static object? FaithfulnessJson(FaithfulnessResult? f) => f is null ? null : FaithfulnessJson(
        f.Fractions, f.Tokens, f.Comprehensiveness, f.Sufficiency, f.ComprehensivenessMean, f.SufficiencyMean, f.AopcDeletion,
        f.AopcInsertion, f.CurvePoints, f.Probability, f.PerturbedInputs, f.Milliseconds);

    /// <summary>The fleet's faithfulness (<see cref="Contracts.V1.TextFaithfulness"/>) in the same shape.</summary>
    public static object? FaithfulnessJson(Contracts.V1.TextFaithfulness? f) => f is null ? null : FaithfulnessJson(
        f.Fractions, f.Tokens, f.Comprehensiveness, f.Sufficiency, f.ComprehensivenessMean, f.SufficiencyMean, f.AopcDeletion,
        f.AopcInsertion, f.CurvePoints, f.Probability, f.PerturbedInputs, f.Milliseconds);

    private static object FaithfulnessJson(
        IEnumerable<double> fractions, IEnumerable<int> tokens, IEnumerable<double> comprehensiveness, IEnumerable<double> sufficiency,
        double comprehensivenessMean, double sufficiencyMean, double aopcDeletion, double aopcInsertion, int curvePoints,
        double probability, int perturbedInputs, double milliseconds) => new
    {
        fractions,
        tokens,
        comprehensiveness = NonFinite.OrNull(comprehensiveness),
        sufficiency = NonFinite.OrNull(sufficiency),
        comprehensiveness_mean = N(comprehensivenessMean),
        sufficiency_mean = N(sufficiencyMean),
        aopc_deletion = N(aopcDeletion),
        aopc_insertion = N(aopcInsertion),
        curve_points = curvePoints,
        probability = N(probability),
        perturbed_inputs = perturbedInputs,
        milliseconds,
    };

    /// <summary>The line the terminal prints when the reference is weak (null when it is not).</summary>
    public static string? WeakReferenceLine(ReferenceCheck? check) => check is { Weak: true }
        ? string.Create(Inv, $"reference  WEAK: p(target) moved only {check.ProbabilityChange:+0.0000;-0.0000;0} from the reference (threshold {check.Threshold:G3}): the scores may add up exactly and still say little")
        : null;

    public static string FaithfulnessLine(FaithfulnessResult f)
    {
        string At(double[] values) => string.Join(" ", f.Fractions.Zip(values, (k, v) => string.Create(Inv, $"{k * 100:0}%:{v:+0.000;-0.000;0}")));
        return string.Create(Inv,
            $"faithful   comprehensiveness {At(f.Comprehensiveness)}   sufficiency {At(f.Sufficiency)}   AOPC deletion {f.AopcDeletion:+0.000;-0.000;0} insertion {f.AopcInsertion:+0.000;-0.000;0}   ({f.PerturbedInputs} inputs, {f.Milliseconds:0.0} ms)");
    }
}
