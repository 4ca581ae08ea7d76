using AttributionFleet.Engine.Tokenization;

namespace AttributionFleet.Engine.Text;

/// <summary>
/// The model's decision for one text. <see cref="Head"/>: what the outputs mean (single-label, multi-label, regression,
/// embedding). <see cref="Probability"/> is NaN where the head has none (regression, embedding); <see cref="Value"/> is
/// then the output itself.
/// </summary>
public sealed record Prediction(string Label, int Index, double Probability)
{
    public string Head { get; init; } = "single-label";
    public double? Value { get; init; }
}

/// <summary><see cref="Probabilities"/> as the head means them (softmax, or a sigmoid per label); empty for regression and embeddings.</summary>
public sealed record PredictionResult(string Text, string[] Tokens, Prediction Prediction, double[] Probabilities, double[] Logits, bool Truncated);

/// <summary>
/// One text explained. <c>Delta = Fx − Fx0 − Σ Scores</c>; <c>RelativeDelta = |Delta| / |Fx − Fx0|</c> (0 when both are 0).
/// </summary>
public sealed record Explanation(
    string Text,
    string[] Tokens,
    TokenOffset[] Offsets,
    double[] Scores,
    Prediction Prediction,
    int TargetIndex,
    string TargetLabel,
    string Output,
    double Fx,
    double Fx0,
    double Delta,
    double RelativeDelta,
    string Method,
    string SoftmaxRule,
    string Precision,
    bool Truncated)
{
    /// <summary>The head's probabilities at x (softmax, or a sigmoid per label); null for a regression value or an embedding.</summary>
    public double[]? Probabilities { get; init; }
    /// <summary><c>--target all</c>: one attribution row per class, in class order (null otherwise).</summary>
    public IReadOnlyList<ClassAttribution>? Classes { get; init; }
    /// <summary>The reference check (issue #16 item 4); null without probabilities (regression values, embeddings) or when they are not finite.</summary>
    public ReferenceCheck? Reference { get; init; }
    /// <summary>Faithfulness of the scores (<c>--faithfulness</c>); null when not asked for.</summary>
    public Faithfulness.FaithfulnessResult? Faithfulness { get; init; }
}

/// <summary>One class's attribution of a text explained for every class. Same meaning as the fields of <see cref="Explanation"/>.</summary>
public sealed record ClassAttribution(int TargetIndex, string TargetLabel, double[] Scores, double Fx, double Fx0, double Delta, double RelativeDelta)
{
    public ReferenceCheck? Reference { get; init; }
}

/// <summary>
/// Baseline sanity: <c>ProbabilityChange = p_c(x) − p_c(x0)</c> for the explained class c (softmax; a multi-label head's
/// label: its sigmoid; p_c(x0) the mean over the references
/// when there are several). <c>Weak</c> when its magnitude is below <c>Threshold</c>: the scores may add up exactly and
/// still say little, because the reference already scores the class about as the text does.
/// </summary>
public sealed record ReferenceCheck(double ProbabilityChange, double Threshold, bool Weak);
