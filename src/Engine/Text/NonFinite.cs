using AttributionFleet.Engine.Attribution;

namespace AttributionFleet.Engine.Text;

/// <summary>
/// Non-finite values are an outcome, never a hang or a plausible-looking number: a text whose f(x), f(x0), delta,
/// probability or any score is NaN or infinite gets status <see cref="Status.NonFinite"/> (its numbers are written as
/// JSON null) and counts as a failure of that text.
/// </summary>
public static class NonFinite
{
    public static class Status
    {
        public const string Ok = "ok";
        public const string NonFinite = "non_finite";
    }

    public static bool IsFinite(Explanation e) =>
        double.IsFinite(e.Fx) && double.IsFinite(e.Fx0) && double.IsFinite(e.Delta) && IsFinite(e.Prediction)
        && e.Scores.All(double.IsFinite);

    /// <summary>A head's decision: its probability, or for regression values and embeddings (no probability: NaN by design) its value.</summary>
    public static bool IsFinite(Prediction p) => p.Value is double v ? double.IsFinite(v) : double.IsFinite(p.Probability);

    public static bool IsFinite(PredictionResult p) => p.Logits.All(double.IsFinite) && p.Probabilities.All(double.IsFinite) && IsFinite(p.Prediction);

    public static string StatusOf(Explanation e) => IsFinite(e) ? Status.Ok : Status.NonFinite;

    public static string StatusOf(PredictionResult p) => IsFinite(p) ? Status.Ok : Status.NonFinite;

    /// <summary>The value, or null when it is NaN or infinite (JSON has no NaN).</summary>
    public static double? OrNull(double v) => double.IsFinite(v) ? v : null;

    public static double?[] OrNull(IEnumerable<double> values) => values.Select(OrNull).ToArray();
}

/// <summary>Precisions a device can run: float16 on CPU gives NaN everywhere (half-precision CPU kernels), so it is refused.</summary>
public static class PrecisionSupport
{
    public static void Check(Precision precision, bool cuda)
    {
        if (precision == Precision.Float16 && !cuda)
            throw new AttributionRequestException("precision",
                "float16 needs a CUDA device: on CPU its reductions overflow and every score is NaN; use float32 or float64 (bfloat16 runs on CPU)");
    }
}
