using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Text;

/// <summary>
/// What a head's outputs mean, in one place: the probabilities predict reports (softmax for single-label, a sigmoid
/// per label for multi-label, none for a regression value or a bare encoder's embedding) and the scalar an
/// explanation may take for each (never a softmax the model does not mean).
/// </summary>
public static class HeadOutputs
{
    /// <summary>The head's name as output shows it.</summary>
    public static string Name(ProblemType problem) => problem switch
    {
        ProblemType.SingleLabel => "single-label",
        ProblemType.MultiLabel => "multi-label",
        ProblemType.Regression => "regression",
        _ => "embedding",
    };

    /// <summary>Probabilities [B, C] as the head means them; null for regression values and embeddings.</summary>
    public static Tensor? Probabilities(Tensor logits, ProblemType problem) => problem switch
    {
        ProblemType.SingleLabel => logits.softmax(1),
        ProblemType.MultiLabel => logits.sigmoid(),
        _ => null,
    };

    /// <summary>
    /// The decision for one text: the most probable label (single- and multi-label; for multi-label every label has
    /// its own probability, see <see cref="Probabilities"/>), the value of output 0 (regression; no probability, NaN),
    /// or the largest embedding dimension (bare encoder).
    /// </summary>
    public static Prediction Predict(double[] logits, double[]? probabilities, ProblemType problem, Func<int, string> label)
    {
        if (problem == ProblemType.Regression)
            return new Prediction(label(0), 0, double.NaN) { Head = Name(problem), Value = logits[0] };
        var scores = probabilities ?? logits;
        int best = 0;
        for (int i = 1; i < scores.Length; i++) if (scores[i] > scores[best]) best = i;
        return probabilities is null
            ? new Prediction(label(best), best, double.NaN) { Head = Name(problem), Value = logits[best] }
            : new Prediction(label(best), best, probabilities[best]) { Head = Name(problem) };
    }

    /// <summary>
    /// The explained scalar for a requested output on this head. Multi-label: <c>probability</c> is the label's own
    /// sigmoid, and the default <c>centered-logit</c> (meaningless for independent labels) is the label's logit.
    /// Regression and embeddings: <c>centered-logit</c> would be identically 0 for one output (f(x) = 0, all scores 0),
    /// so it is the output itself (<c>logit</c>); <c>probability</c> is refused.
    /// </summary>
    public static (OutputKind Kind, string Name) Resolve(ProblemType problem, OutputKind requested, string requestedName)
    {
        switch (problem, requested)
        {
            case (ProblemType.MultiLabel, OutputKind.Probability): return (OutputKind.SigmoidProbability, requestedName);
            case (ProblemType.MultiLabel or ProblemType.Regression or ProblemType.Embedding, OutputKind.CenteredLogit):
                return (OutputKind.Logit, "logit");
            case (ProblemType.Regression, OutputKind.Probability):
                throw new AttributionRequestException("output", "this model has a regression head (one value, no probability): use output 'logit' (the value itself)");
            case (ProblemType.Embedding, OutputKind.Probability):
                throw new AttributionRequestException("output", "this model is a bare encoder (its outputs are an embedding, not label scores): use output 'logit' (the embedding dimension itself)");
            default: return (requested, requestedName);
        }
    }
}
