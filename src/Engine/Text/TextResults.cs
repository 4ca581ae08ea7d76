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
    bool Truncated);
