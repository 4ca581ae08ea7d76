using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using AttributionFleet.Cli.Report;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli;

/// <summary>JSON lines and terminal tables for predictions and explanations.</summary>
public static class Output
{
    /// <summary>
    /// snake_case, every field written (a missing value is null, never dropped), and no NaN/Infinity: a non-finite
    /// number is written as null by the shapes below, so a value that slipped through is a bug, not a "NaN" string.
    /// </summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    private static double? N(double v) => NonFinite.OrNull(v);

    /// <summary>What the head decided: {label, index, probability, head, value} (probability null for regression values and embeddings).</summary>
    private static object PredictionOf(Prediction p) => new
    {
        label = p.Label,
        index = p.Index,
        probability = N(p.Probability),
        head = p.Head,
        value = p.Value is double v ? N(v) : null,
    };

    public static object PredictionJson(PredictionResult p, string? id = null) => new
    {
        id,
        text = p.Text,
        tokens = p.Tokens,
        status = NonFinite.StatusOf(p),
        prediction = NonFinite.IsFinite(p) ? PredictionOf(p.Prediction) : null,
        probabilities = NonFinite.OrNull(p.Probabilities),
        logits = NonFinite.OrNull(p.Logits),
        truncated = p.Truncated,
    };

    public static object ExplanationJson(Explanation e, string? id = null, bool? overThreshold = null) => new
    {
        id,
        text = e.Text,
        tokens = e.Tokens,
        scores = NonFinite.OrNull(e.Scores),
        words = WordSpans.Merge(e).Select(w => new { text = w.Text, start = w.Start, end = w.End, score = N(w.Score), pieces = w.Pieces, special = w.Special }).ToList(),
        status = NonFinite.StatusOf(e),
        prediction = PredictionOf(e.Prediction),
        target = new { label = e.TargetLabel, index = e.TargetIndex },
        output = e.Output,
        f_x = N(e.Fx),
        f_x0 = N(e.Fx0),
        delta = N(e.Delta),
        relative_delta = N(e.RelativeDelta),
        over_threshold = overThreshold,
        method = e.Method,
        softmax_rule = e.SoftmaxRule,
        precision = e.Precision,
        truncated = e.Truncated,
        // null where there is no probability to move (a regression value) or it is not finite: never a NaN.
        weak_reference = e.Reference is { } reference && double.IsFinite(reference.ProbabilityChange) ? reference.Weak : (bool?)null,
        probability_change = e.Reference is { } check ? N(check.ProbabilityChange) : null,
        classes = ExplanationExtras.ClassesJson(e),
        faithfulness = ExplanationExtras.FaithfulnessJson(e.Faithfulness),
    };

    /// <summary>A fleet result in the shape of <see cref="ExplanationJson"/> (same fields, same order; token offsets instead of merged words).</summary>
    public static object AttributionJson(AttributionFleet.Contracts.V1.TextAttribution r) => new
    {
        id = r.Id,
        text = r.Text,
        tokens = r.Tokens,
        // Each token's characters in text as [start, end) (end exclusive; start = end for special tokens), for merging into words.
        offsets = r.Offsets?.Select(o => new[] { o.Start, o.Start + o.Length }),
        scores = r.Scores.Select(N).ToArray(),
        status = r.Status == NonFinite.Status.Ok && r.Scores.All(double.IsFinite) && double.IsFinite(r.Fx) && double.IsFinite(r.Fx0) && double.IsFinite(r.Delta)
            && (r.Classes?.All(c => c.Scores.All(double.IsFinite) && double.IsFinite(c.Fx) && double.IsFinite(c.Fx0) && double.IsFinite(c.Delta)) ?? true)
            ? NonFinite.Status.Ok : NonFinite.Status.NonFinite,
        prediction = new { label = r.Prediction.Label, index = r.Prediction.Index, probability = N(r.Prediction.Probability) },
        target = new { label = r.TargetLabel, index = r.TargetIndex },
        output = r.Output,
        f_x = N(r.Fx),
        f_x0 = N(r.Fx0),
        delta = N(r.Delta),
        relative_delta = N(r.RelativeDelta),
        over_threshold = r.OverThreshold,
        method = r.Method,
        softmax_rule = r.SoftmaxRule,
        precision = r.Precision,
        truncated = r.Truncated,
        weak_reference = r.ProbabilityChange is double change && double.IsFinite(change) ? r.WeakReference : null,
        probability_change = r.ProbabilityChange is double pc ? N(pc) : null,
        classes = ExplanationExtras.ClassesJson(r.Classes),
        faithfulness = ExplanationExtras.FaithfulnessJson(r.Faithfulness),
    };

    public static string Line(object o) => JsonSerializer.Serialize(o, Json);

    /// <summary>Colour unless output is redirected or NO_COLOR is set (https://no-color.org).</summary>
    public static bool UseColor => !Console.IsOutputRedirected && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"));

    /// <summary>Words (pieces merged) coloured like <see cref="ColoredTokens"/>; special tokens left out.</summary>
    public static string ColoredWords(IReadOnlyList<Word> words, bool color)
    {
        var content = words.Where(w => !w.Special).ToList();
        return ColoredTokens(content.Select(w => Terminal.Escape(w.Text)).ToArray(), content.Select(w => w.Score).ToArray(), color);
    }

    /// <summary>Tokens coloured on a diverging scale: green raises the target, red lowers it; brightness by |score|.</summary>
    public static string ColoredTokens(string[] tokens, double[] scores, bool color)
    {
        double max = scores.Length == 0 ? 0 : scores.Max(Math.Abs);
        var sb = new StringBuilder();
        for (int i = 0; i < tokens.Length; i++)
        {
            if (i > 0) sb.Append(' ');
            if (!color)
            {
                sb.Append($"{tokens[i]}({scores[i]:+0.000;-0.000;0})");
                continue;
            }
            double s = max > 0 ? scores[i] / max : 0;
            int level = (int)Math.Round(Math.Abs(s) * 4); // 0..4
            // 256-colour background: greens 22,28,34,40 / reds 52,88,124,160
            int[] greens = { 0, 22, 28, 34, 40 }, reds = { 0, 52, 88, 124, 160 };
            int bg = s >= 0 ? greens[level] : reds[level];
            sb.Append(level == 0 ? tokens[i] : $"\u001b[48;5;{bg}m\u001b[97m{tokens[i]}\u001b[0m");
        }
        return sb.ToString();
    }
}
