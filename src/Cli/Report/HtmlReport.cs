using System.Globalization;
using System.Text;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Report;

/// <summary>What the HTML report shows besides the explanations.</summary>
public sealed record HtmlReportOptions
{
    public string Title { get; init; } = "fleet explain";
    /// <summary>Model shown in the header (a folder or the default model's id); omitted when null.</summary>
    public string? Model { get; init; }
    /// <summary>Client ids of the texts, parallel to the explanations; 1, 2, … when null.</summary>
    public IReadOnlyList<string>? Ids { get; init; }
    /// <summary>A row whose relative delta |f(x) − f(x0) − Σ scores| / |f(x) − f(x0)| exceeds this gets a visible warning.</summary>
    public double DeltaThreshold { get; init; } = 1e-4;
}

/// <summary>
/// A self-contained HTML page of explanations: inline CSS only (no scripts, fonts, images or links to anywhere), one
/// row per text with its words coloured by score on a diverging scale (per-piece scores in the tooltip), the prediction,
/// target, method, f(x), f(x0), delta and relative delta, a warning where the relative delta exceeds the threshold, and
/// a legend. Every string that comes from the user or the model is HTML-escaped, and each text is bidi-isolated.
/// </summary>
public static class HtmlReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private const string Css = """
        :root { color-scheme: light; }
        body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #1f2328; background: #fff; }
        h1 { font-size: 20px; margin: 0 0 4px 0; }
        .sub { color: #57606a; font-size: 13px; margin-bottom: 14px; }
        .legend { display: flex; align-items: center; gap: 10px; font-size: 12px; color: #57606a; margin: 0 0 16px 0; }
        .bar { width: 260px; height: 14px; border: 1px solid #d0d7de; border-radius: 3px;
               background: linear-gradient(to right, rgb(215,48,39), rgb(255,255,255), rgb(26,152,80)); }
        table { border-collapse: collapse; width: 100%; }
        th, td { border-bottom: 1px solid #d8dee4; padding: 8px 10px; vertical-align: top; text-align: left; font-size: 13px; }
        th { background: #f6f8fa; font-weight: 600; }
        td.num { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: nowrap; font-size: 12px; }
        .text { font-size: 16px; line-height: 2.0; unicode-bidi: isolate; }
        .w { padding: 2px 3px; border-radius: 3px; white-space: pre-wrap; }
        .sp { color: #8c959f; font-size: 11px; font-family: "DejaVu Sans Mono", monospace; }
        .label { font-weight: 600; }
        .warn { margin-top: 6px; padding: 4px 8px; background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; font-size: 12px; color: #7d4e00; }
        .ok { color: #1a7f37; }
        .note { color: #57606a; font-size: 12px; }
        """;

    public static string Render(IReadOnlyList<Explanation> explanations, HtmlReportOptions? options = null)
    {
        options ??= new HtmlReportOptions();
        int warnings = explanations.Count(e => !(e.RelativeDelta <= options.DeltaThreshold));
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        sb.Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        sb.Append("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
        sb.Append("<title>").Append(Escape(options.Title)).Append("</title>\n<style>\n").Append(Css).Append("\n</style>\n</head>\n<body>\n");
        sb.Append("<h1>").Append(Escape(options.Title)).Append("</h1>\n<div class=\"sub\">");
        sb.Append(explanations.Count.ToString(Inv)).Append(explanations.Count == 1 ? " text" : " texts");
        if (options.Model is not null) sb.Append(" · model <bdi>").Append(Escape(options.Model)).Append("</bdi>");
        sb.Append(" · relative delta threshold ").Append(Escape(Fmt(options.DeltaThreshold, "G3")));
        sb.Append(warnings == 0
            ? " · <span class=\"ok\">every relative delta is within the threshold</span>"
            : $" · <b>{warnings.ToString(Inv)} above the threshold</b>");
        sb.Append("</div>\n");
        sb.Append("<div class=\"legend\"><span>lowers the target</span><span class=\"bar\"></span><span>raises the target</span>");
        sb.Append("<span>· colour strength is |score| relative to the largest |word score| in the row; hover a word for its pieces' scores</span></div>\n");
        sb.Append("<table>\n<thead><tr><th>#</th><th>text</th><th>prediction</th><th>target · method</th><th>f(x) · f(x0)</th><th>delta</th></tr></thead>\n<tbody>\n");
        for (int i = 0; i < explanations.Count; i++)
            Row(sb, explanations[i], options.Ids is { } ids && i < ids.Count ? ids[i] : (i + 1).ToString(Inv), options);
        sb.Append("</tbody>\n</table>\n</body>\n</html>\n");
        return sb.ToString();
    }

    private static void Row(StringBuilder sb, Explanation e, string id, HtmlReportOptions options)
    {
        var words = Words.Merge(e);
        double max = 0;
        foreach (var w in words) if (!w.Special && double.IsFinite(w.Score)) max = Math.Max(max, Math.Abs(w.Score));
        sb.Append("<tr>\n<td class=\"num\"><bdi>").Append(Escape(id)).Append("</bdi></td>\n<td><div class=\"text\" dir=\"auto\">");
        foreach (var w in words)
        {
            if (w.SpaceBefore) sb.Append(' ');
            var title = new StringBuilder();
            title.Append(w.Text).Append(": ").Append(Fmt(w.Score, "+0.0000;-0.0000;0"));
            if (w.Pieces.Count > 1 || w.Special)
                foreach (var (token, score) in w.Pieces) title.Append('\n').Append(token).Append(' ').Append(Fmt(score, "+0.0000;-0.0000;0"));
            if (w.Special)
            {
                sb.Append("<span class=\"sp\" title=\"").Append(Escape(title.ToString())).Append("\">").Append(Escape(w.Text)).Append("</span>");
                continue;
            }
            var (background, foreground) = Colour(max > 0 && double.IsFinite(w.Score) ? w.Score / max : 0);
            sb.Append("<span class=\"w\" style=\"background:").Append(background).Append(";color:").Append(foreground)
              .Append("\" title=\"").Append(Escape(title.ToString())).Append("\">").Append(Escape(w.Text)).Append("</span>");
        }
        sb.Append("</div>");
        if (e.Truncated) sb.Append("<div class=\"note\">truncated to the model's maximum length</div>");
        if (!(e.RelativeDelta <= options.DeltaThreshold))
            sb.Append("<div class=\"warn\">⚠ relative delta ").Append(Escape(Fmt(e.RelativeDelta, "E2")))
              .Append(" exceeds ").Append(Escape(Fmt(options.DeltaThreshold, "G3")))
              .Append(": the scores do not add up to f(x) − f(x0); treat them with care</div>");
        if (e.Reference is { Weak: true } weak)
            sb.Append("<div class=\"warn weak\">⚠ weak reference: p(target) moved only ").Append(Escape(Fmt(weak.ProbabilityChange, "+0.0000;-0.0000;0")))
              .Append(" from the reference (threshold ").Append(Escape(Fmt(weak.Threshold, "G3"))).Append("): the scores may add up exactly and still say little</div>");
        sb.Append("</td>\n");
        sb.Append("<td><span class=\"label\"><bdi>").Append(Escape(e.Prediction.Label)).Append("</bdi></span><br><span class=\"note\">p = ")
          .Append(Fmt(e.Prediction.Probability, "0.0000")).Append("</span></td>\n");
        sb.Append("<td><bdi>").Append(Escape(e.TargetLabel)).Append("</bdi> <span class=\"note\">[").Append(Escape(e.Output)).Append("]</span><br><span class=\"note\">")
          .Append(Escape($"{e.Method} / {e.SoftmaxRule} / {e.Precision}")).Append("</span></td>\n");
        sb.Append("<td class=\"num\">f(x) ").Append(Fmt(e.Fx, "0.000000")).Append("<br>f(x0) ").Append(Fmt(e.Fx0, "0.000000")).Append("</td>\n");
        sb.Append("<td class=\"num\">delta ").Append(Fmt(e.Delta, "E2")).Append("<br>relative ").Append(Fmt(e.RelativeDelta, "E2")).Append("</td>\n</tr>\n");
    }

    /// <summary>Background and text colour for a score in [−1, 1]: red below zero, green above, white at zero.</summary>
    public static (string Background, string Foreground) Colour(double s)
    {
        s = Math.Clamp(s, -1, 1);
        var (r, g, b) = s >= 0 ? (26, 152, 80) : (215, 48, 39);
        double a = Math.Abs(s);
        int Mix(int c) => (int)Math.Round(255 + (c - 255) * a);
        return ($"rgb({Mix(r)},{Mix(g)},{Mix(b)})", a > 0.6 ? "#ffffff" : "#1f2328");
    }

    /// <summary>
    /// Escapes text for HTML element content and quoted attribute values: &amp; &lt; &gt; " ' become entities, C0/C1 control
    /// characters other than tab and newline (which the attribute keeps as &amp;#10;) become spaces, and lone surrogates
    /// become U+FFFD. Everything else (RTL text, emoji) is kept as text.
    /// </summary>
    public static string Escape(string? text)
    {
        if (string.IsNullOrEmpty(text)) return "";
        var sb = new StringBuilder(text.Length + 16);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            switch (c)
            {
                case '&': sb.Append("&amp;"); break;
                case '<': sb.Append("&lt;"); break;
                case '>': sb.Append("&gt;"); break;
                case '"': sb.Append("&quot;"); break;
                case '\'': sb.Append("&#39;"); break;
                case '\n': sb.Append("&#10;"); break;
                case '\t': sb.Append("&#9;"); break;
                default:
                    if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { sb.Append(c).Append(text[++i]); }
                    else if (char.IsSurrogate(c)) sb.Append('\uFFFD');
                    else if (c < ' ' || (c >= '\u007F' && c <= '\u009F')) sb.Append(' ');
                    else sb.Append(c);
                    break;
            }
        }
        return sb.ToString();
    }

    private static string Fmt(double v, string format) =>
        double.IsNaN(v) ? "NaN" : double.IsPositiveInfinity(v) ? "∞" : double.IsNegativeInfinity(v) ? "−∞" : v.ToString(format, Inv);
}
