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

    public static object? ClassesJson(Explanation e) => e.Classes?.Select(c => new
    {
        target = new { label = c.TargetLabel, index = c.TargetIndex },
        scores = c.Scores,
        f_x = c.Fx,
        f_x0 = c.Fx0,
        delta = c.Delta,
        relative_delta = c.RelativeDelta,
        weak_reference = c.Reference?.Weak,
        probability_change = c.Reference?.ProbabilityChange,
    }).ToList();

    public static object? FaithfulnessJson(FaithfulnessResult? f) => f is null ? null : new
    {
        fractions = f.Fractions,
        tokens = f.Tokens,
        comprehensiveness = f.Comprehensiveness,
        sufficiency = f.Sufficiency,
        comprehensiveness_mean = f.ComprehensivenessMean,
        sufficiency_mean = f.SufficiencyMean,
        aopc_deletion = f.AopcDeletion,
        aopc_insertion = f.AopcInsertion,
        curve_points = f.CurvePoints,
        probability = f.Probability,
        perturbed_inputs = f.PerturbedInputs,
        milliseconds = f.Milliseconds,
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
