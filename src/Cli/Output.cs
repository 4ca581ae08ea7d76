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
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static object PredictionJson(PredictionResult p, string? id = null) => new
    {
        id,
        text = p.Text,
        tokens = p.Tokens,
        prediction = p.Prediction, // {label, index, probability}
        probabilities = p.Probabilities,
        logits = p.Logits,
        truncated = p.Truncated,
    };

    public static object ExplanationJson(Explanation e, string? id = null) => new
    {
        id,
        text = e.Text,
        tokens = e.Tokens,
        scores = e.Scores,
        prediction = e.Prediction,
        target = new { label = e.TargetLabel, index = e.TargetIndex },
        output = e.Output,
        f_x = e.Fx,
        f_x0 = e.Fx0,
        delta = e.Delta,
        relative_delta = e.RelativeDelta,
        method = e.Method,
        softmax_rule = e.SoftmaxRule,
        precision = e.Precision,
        truncated = e.Truncated,
    };

    /// <summary>A fleet result in the shape of <see cref="ExplanationJson"/> (same fields, same order).</summary>
    public static object AttributionJson(AttributionFleet.Contracts.V1.TextAttribution r) => new
    {
        id = r.Id,
        text = r.Text,
        tokens = r.Tokens,
        // Each token's characters in text as [start, end) (end exclusive; start = end for special tokens), for merging into words.
        offsets = r.Offsets?.Select(o => new[] { o.Start, o.Start + o.Length }),
        scores = r.Scores,
        prediction = new { label = r.Prediction.Label, index = r.Prediction.Index, probability = r.Prediction.Probability },
        target = new { label = r.TargetLabel, index = r.TargetIndex },
        output = r.Output,
        f_x = r.Fx,
        f_x0 = r.Fx0,
        delta = r.Delta,
        relative_delta = r.RelativeDelta,
        method = r.Method,
        softmax_rule = r.SoftmaxRule,
        precision = r.Precision,
        truncated = r.Truncated,
    };

    public static string Line(object o) => JsonSerializer.Serialize(o, Json);

    /// <summary>Colour unless output is redirected or NO_COLOR is set (https://no-color.org).</summary>
    public static bool UseColor => !Console.IsOutputRedirected && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NO_COLOR"));

    /// <summary>Words (pieces merged) coloured like <see cref="ColoredTokens"/>; special tokens left out.</summary>
    public static string ColoredWords(IReadOnlyList<Word> words, bool color)
    {
        var content = words.Where(w => !w.Special).ToList();
        return ColoredTokens(content.Select(w => w.Text).ToArray(), content.Select(w => w.Score).ToArray(), color);
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
