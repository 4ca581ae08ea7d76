namespace AttributionFleet.Engine.Text;

/// <summary>One prediction as a line of text that says what the head means.</summary>
public static class PredictionText
{
    /// <summary>
    /// single-label: the label, its probability and every label's (they sum to 1); multi-label: each label's own
    /// probability ("independent"); regression: the value; embedding: the pooled embedding's size and first values.
    /// </summary>
    public static string Describe(PredictionResult r, IReadOnlyList<string> labels)
    {
        string Name(int k) => labels.ElementAtOrDefault(k) ?? k.ToString();
        var p = r.Prediction;
        switch (p.Head)
        {
            case "regression":
                return r.Logits.Length == 1
                    ? $"{"value",-12} {r.Logits[0]:0.0000}"
                    : $"{"values",-12} [{string.Join("  ", r.Logits.Select((v, k) => $"{Name(k)}={v:0.0000}"))}]";
            case "embedding":
                return $"{"embedding",-12} [{r.Logits.Length} dims: {string.Join(" ", r.Logits.Take(4).Select(v => v.ToString("0.0000")))}{(r.Logits.Length > 4 ? " …" : "")}]";
            case "multi-label":
                return $"{p.Label,-12} {p.Probability:0.0000}  independent [{string.Join("  ", r.Probabilities.Select((q, k) => $"{Name(k)}={q:0.0000}"))}]";
            default:
                return $"{p.Label,-12} {p.Probability:0.0000}  [{string.Join("  ", r.Probabilities.Select((q, k) => $"{Name(k)}={q:0.0000}"))}]";
        }
    }
}
