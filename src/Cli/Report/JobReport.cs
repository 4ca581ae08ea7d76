using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using AttributionFleet.Engine.Faithfulness;

namespace AttributionFleet.Cli.Report;

/// <summary>What the job report shows besides the results.</summary>
public sealed record JobReportOptions
{
    public string Title { get; init; } = "fleet report";
    /// <summary>The results file's name, shown in the header.</summary>
    public string? Source { get; init; }
    /// <summary>For lines without <c>over_threshold</c> (those of <c>fleet explain --json</c>): relative delta above this counts as over.</summary>
    public double DeltaThreshold { get; init; } = 1e-4;
    /// <summary>Words per list in "the words that raise and lower each class most".</summary>
    public int TopWords { get; init; } = 10;
    /// <summary>A word's mean is ranked only when it occurs at least this often in the class's rows.</summary>
    public int MinOccurrencesForMean { get; init; } = 2;
}

/// <summary>
/// One self-contained page for a whole job (issue #16 item 5). The summary is static HTML: label counts, a histogram
/// of |delta|, over-threshold, non-finite and weak-reference counts, faithfulness summaries (mean, p5, p95) when the
/// lines carry them, and for every class the words that raise and lower it most across the job, by total and by mean.
/// Every text is in one JSON block inlined in the page; a short inline script (allowed by its hash in the page's CSP,
/// nothing else may run or load) renders the rows on demand, 200 at a time as the list scrolls, filtered by a search
/// box and sorted by |delta|, relative delta, prediction or probability. The script builds every row with
/// <c>textContent</c>, so hostile text stays text.
/// </summary>
public static class JobReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Writes the page whole or not at all (<see cref="AtomicFile"/>: a temporary file beside the target, renamed over it).</summary>
    public static void Write(string path, IReadOnlyList<ReportRow> rows, JobReportOptions options) =>
        AtomicFile.WriteAllText(path, "--html", Render(rows, options));

    public static string Render(IReadOnlyList<ReportRow> rows, JobReportOptions? options = null)
    {
        options ??= new JobReportOptions();
        var sb = new StringBuilder(1 << 20);
        string script = Script;
        string hash = Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(script)));
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        sb.Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        sb.Append("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-").Append(hash).Append("'\">\n");
        sb.Append("<title>").Append(HtmlReport.Escape(options.Title)).Append("</title>\n<style>\n").Append(Css).Append("\n</style>\n</head>\n<body>\n");
        sb.Append("<h1>").Append(HtmlReport.Escape(options.Title)).Append("</h1>\n<div class=\"sub\">").Append(rows.Count.ToString(Inv)).Append(rows.Count == 1 ? " text" : " texts");
        if (options.Source is not null) sb.Append(" · <bdi>").Append(HtmlReport.Escape(options.Source)).Append("</bdi>");
        sb.Append("</div>\n");
        Summary(sb, rows, options);
        TopWords(sb, rows, options);
        sb.Append("<h2>Texts</h2>\n<div class=\"controls\"><input id=\"q\" type=\"search\" placeholder=\"search text or id\" aria-label=\"search\">");
        sb.Append("<select id=\"sort\" aria-label=\"sort\"><option value=\"file\">file order</option><option value=\"delta\">|delta|, largest first</option>");
        sb.Append("<option value=\"rel\">relative delta, largest first</option><option value=\"pred\">prediction</option>");
        sb.Append("<option value=\"prob\">probability, highest first</option><option value=\"probasc\">probability, lowest first</option></select>");
        sb.Append("<span id=\"count\" class=\"note\"></span></div>\n");
        sb.Append("<noscript><div class=\"warn\">the texts are rendered by the page's script; allow it to see them</div></noscript>\n");
        sb.Append("<table id=\"rows\"><thead><tr><th>id</th><th>text (words coloured by score: red lowers the target, green raises it)</th><th>prediction</th><th>target</th><th>delta</th></tr></thead><tbody></tbody></table>\n");
        sb.Append("<div id=\"more\" class=\"note\"></div>\n");
        sb.Append("<script type=\"application/json\" id=\"data\">");
        Data(sb, rows, options);
        sb.Append("</script>\n<script>").Append(script).Append("</script>\n</body>\n</html>\n");
        return sb.ToString();
    }

    private static void Summary(StringBuilder sb, IReadOnlyList<ReportRow> rows, JobReportOptions options)
    {
        int over = rows.Count(r => IsOver(r, options)), nonFinite = rows.Count(r => r.NonFinite), weak = rows.Count(r => r.WeakReference == true);
        sb.Append("<h2>Summary</h2>\n<div class=\"cards\">");
        Card(sb, "texts", rows.Count.ToString(Inv), null);
        Card(sb, "over the delta threshold", over.ToString(Inv), over > 0 ? "bad" : "good");
        Card(sb, "non-finite (NaN/∞)", nonFinite.ToString(Inv), nonFinite > 0 ? "bad" : "good");
        Card(sb, "weak reference", rows.Any(r => r.WeakReference is not null) ? weak.ToString(Inv) : "not checked", weak > 0 ? "bad" : null);
        sb.Append("</div>\n");
        if (weak > 0)
            sb.Append("<div class=\"warn\">⚠ ").Append(weak.ToString(Inv)).Append(weak == 1 ? " text has" : " texts have")
              .Append(" a weak reference: the reference already scores the class about as the text does, so the scores may add up exactly and still say little</div>\n");
        sb.Append("<div class=\"two\"><div><h3>Predicted labels</h3><table class=\"small\">");
        int maxLabel = 1;
        var labels = rows.GroupBy(r => r.Label).Select(g => (Label: g.Key, Count: g.Count())).OrderByDescending(g => g.Count).ThenBy(g => g.Label, StringComparer.Ordinal).ToList();
        foreach (var l in labels) maxLabel = Math.Max(maxLabel, l.Count);
        foreach (var (label, count) in labels)
            sb.Append("<tr><td><bdi>").Append(HtmlReport.Escape(label)).Append("</bdi></td><td class=\"num\">").Append(count.ToString(Inv))
              .Append("</td><td><div class=\"hbar\" style=\"width:").Append((200.0 * count / maxLabel).ToString("0", Inv)).Append("px\"></div></td></tr>");
        sb.Append("</table></div>\n<div><h3>|delta|</h3><table class=\"small\">");
        var bins = Histogram(rows);
        int maxBin = Math.Max(1, bins.Max(b => b.Count));
        foreach (var (name, count) in bins)
            sb.Append("<tr><td class=\"num\">").Append(HtmlReport.Escape(name)).Append("</td><td class=\"num\">").Append(count.ToString(Inv))
              .Append("</td><td><div class=\"hbar\" style=\"width:").Append((200.0 * count / maxBin).ToString("0", Inv)).Append("px\"></div></td></tr>");
        sb.Append("</table><div class=\"note\">over the threshold: the fleet's own flag, else relative delta above ").Append(HtmlReport.Escape(options.DeltaThreshold.ToString("G3", Inv))).Append("</div></div></div>\n");
        var faithful = rows.Where(r => r.Faithfulness is not null).Select(r => r.Faithfulness!).ToList();
        if (faithful.Count > 0)
        {
            sb.Append("<h3>Faithfulness (").Append(faithful.Count.ToString(Inv)).Append(" texts)</h3>\n<table class=\"small\"><tr><th>metric</th><th>mean</th><th>p5</th><th>p95</th></tr>");
            foreach (var (name, values) in new[]
                     {
                         ("comprehensiveness (mean over 1, 5, 10, 20 %; higher is better)", faithful.Select(f => f.Comprehensiveness)),
                         ("sufficiency (lower is better)", faithful.Select(f => f.Sufficiency)),
                         ("AOPC deletion (higher is better)", faithful.Select(f => f.AopcDeletion)),
                         ("AOPC insertion (higher is better)", faithful.Select(f => f.AopcInsertion)),
                     })
            {
                var s = Engine.Faithfulness.Summary.Of(values)!;
                sb.Append("<tr><td>").Append(HtmlReport.Escape(name)).Append("</td><td class=\"num\">").Append(Fmt(s.Mean)).Append("</td><td class=\"num\">")
                  .Append(Fmt(s.P5)).Append("</td><td class=\"num\">").Append(Fmt(s.P95)).Append("</td></tr>");
            }
            sb.Append("</table>\n");
        }
    }

    private static bool IsOver(ReportRow r, JobReportOptions options) => r.OverThreshold ?? !(r.RelativeDelta <= options.DeltaThreshold);

    private static void Card(StringBuilder sb, string name, string value, string? tone) =>
        sb.Append("<div class=\"card").Append(tone is null ? "" : " " + tone).Append("\"><div class=\"v\">").Append(HtmlReport.Escape(value))
          .Append("</div><div class=\"note\">").Append(HtmlReport.Escape(name)).Append("</div></div>");

    /// <summary>|delta| by decade; exact zeros and non-finite values get bins of their own.</summary>
    public static List<(string Name, int Count)> Histogram(IReadOnlyList<ReportRow> rows)
    {
        var edges = new[] { 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2 };
        var names = new List<string> { "0", "< 1e-12" };
        for (int i = 1; i < edges.Length; i++) names.Add($"{edges[i - 1]:0e0} – {edges[i]:0e0}");
        names.Add("≥ 1e-2");
        names.Add("NaN / ∞");
        var counts = new int[names.Count];
        foreach (var r in rows)
        {
            double d = Math.Abs(r.Delta);
            int bin = !double.IsFinite(d) ? names.Count - 1 : d == 0 ? 0 : 1 + edges.Count(e => d >= e);
            counts[bin]++;
        }
        return names.Zip(counts).ToList();
    }

    private static void TopWords(StringBuilder sb, IReadOnlyList<ReportRow> rows, JobReportOptions options)
    {
        sb.Append("<h2>Words that raise and lower each class most</h2>\n<div class=\"note\">summed over the job's texts (total) and averaged per occurrence (mean, words seen at least ")
          .Append(options.MinOccurrencesForMean.ToString(Inv)).Append(" times); words compared in lower case</div>\n");
        var byClass = rows.SelectMany(r => r.Classes).GroupBy(c => c.Label).OrderBy(g => g.Key, StringComparer.Ordinal);
        foreach (var group in byClass)
        {
            var stats = group.SelectMany(c => c.Words).Where(w => double.IsFinite(w.Score))
                .GroupBy(w => w.Text.ToLowerInvariant())
                .Select(g => (Word: g.Key, Total: g.Sum(w => w.Score), Count: g.Count()))
                .ToList();
            var frequent = stats.Where(s => s.Count >= options.MinOccurrencesForMean).ToList();
            sb.Append("<h3>class <bdi>").Append(HtmlReport.Escape(group.Key)).Append("</bdi></h3>\n<div class=\"four\">");
            List(sb, "raise most (total)", stats.Where(s => s.Total > 0).OrderByDescending(s => s.Total).Take(options.TopWords).Select(s => (s.Word, s.Total, s.Count)));
            List(sb, "lower most (total)", stats.Where(s => s.Total < 0).OrderBy(s => s.Total).Take(options.TopWords).Select(s => (s.Word, s.Total, s.Count)));
            List(sb, "raise most (mean)", frequent.Where(s => s.Total > 0).OrderByDescending(s => s.Total / s.Count).Take(options.TopWords).Select(s => (s.Word, s.Total / s.Count, s.Count)));
            List(sb, "lower most (mean)", frequent.Where(s => s.Total < 0).OrderBy(s => s.Total / s.Count).Take(options.TopWords).Select(s => (s.Word, s.Total / s.Count, s.Count)));
            sb.Append("</div>\n");
        }
    }

    private static void List(StringBuilder sb, string title, IEnumerable<(string Word, double Value, int Count)> items)
    {
        sb.Append("<div><h4>").Append(HtmlReport.Escape(title)).Append("</h4><table class=\"small\">");
        bool any = false;
        foreach (var (word, value, count) in items)
        {
            any = true;
            var (background, foreground) = HtmlReport.Colour(value > 0 ? 0.6 : -0.6);
            sb.Append("<tr><td><span class=\"w\" dir=\"auto\" style=\"background:").Append(background).Append(";color:").Append(foreground).Append("\">")
              .Append(HtmlReport.Escape(word)).Append("</span></td><td class=\"num\">").Append(Fmt(value)).Append("</td><td class=\"note\">×")
              .Append(count.ToString(Inv)).Append("</td></tr>");
        }
        if (!any) sb.Append("<tr><td class=\"note\">none</td></tr>");
        sb.Append("</table></div>");
    }

    /// <summary>
    /// The rows as one JSON object for the script: short keys, numbers to 4 significant digits (non-finite as the
    /// strings "NaN", "Infinity", "-Infinity"). The default encoder escapes &lt; &gt; &amp; and quotes, so no text can
    /// close the script element.
    /// </summary>
    private static void Data(StringBuilder sb, IReadOnlyList<ReportRow> rows, JobReportOptions options)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = JavaScriptEncoder.Default }))
        {
            json.WriteStartObject();
            json.WriteStartArray("rows");
            foreach (var r in rows)
            {
                json.WriteStartObject();
                json.WriteString("i", r.Id);
                json.WriteString("t", r.Text);
                json.WriteStartArray("w");
                foreach (var w in r.Words)
                {
                    json.WriteStartArray();
                    json.WriteStringValue(w.Text);
                    Num(json, w.Score);
                    json.WriteEndArray();
                }
                json.WriteEndArray();
                json.WriteString("p", r.Label);
                json.WritePropertyName("pr");
                if (r.Probability is double probability) Num(json, probability);
                else json.WriteNullValue(); // the head has none (a regression value): "v" is the value
                if (r.Value is double value && r.Probability is null)
                {
                    json.WritePropertyName("v");
                    Num(json, value);
                }
                json.WriteString("g", r.Target);
                json.WritePropertyName("d");
                Num(json, r.Delta);
                json.WritePropertyName("r");
                Num(json, r.RelativeDelta);
                if (IsOver(r, options)) json.WriteNumber("o", 1);
                if (r.NonFinite) json.WriteNumber("n", 1);
                if (r.WeakReference == true) json.WriteNumber("k", 1);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        sb.Append(Encoding.UTF8.GetString(stream.ToArray()));
    }

    private static void Num(Utf8JsonWriter json, double v)
    {
        if (double.IsNaN(v)) json.WriteStringValue("NaN");
        else if (double.IsPositiveInfinity(v)) json.WriteStringValue("Infinity");
        else if (double.IsNegativeInfinity(v)) json.WriteStringValue("-Infinity");
        else json.WriteNumberValue(double.Parse(v.ToString("G4", Inv), Inv));
    }

    private static string Fmt(double v) => double.IsFinite(v) ? v.ToString("+0.0000;-0.0000;0", Inv) : double.IsNaN(v) ? "NaN" : v > 0 ? "∞" : "−∞";

    private const string Css = """
        :root { color-scheme: light; }
        body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #1f2328; background: #fff; }
        h1 { font-size: 20px; margin: 0 0 4px 0; } h2 { font-size: 17px; margin: 22px 0 8px 0; } h3 { font-size: 14px; margin: 12px 0 6px 0; }
        h4 { font-size: 12px; margin: 6px 0 4px 0; color: #57606a; }
        .sub, .note { color: #57606a; font-size: 12px; }
        .cards { display: flex; gap: 12px; flex-wrap: wrap; }
        .card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
        .card .v { font-size: 22px; font-weight: 600; } .card.good .v { color: #1a7f37; } .card.bad .v { color: #cf222e; }
        .two { display: flex; gap: 40px; flex-wrap: wrap; } .four { display: flex; gap: 24px; flex-wrap: wrap; }
        table { border-collapse: collapse; } #rows { width: 100%; margin-top: 8px; }
        th, td { border-bottom: 1px solid #d8dee4; padding: 6px 8px; vertical-align: top; text-align: left; font-size: 13px; }
        th { background: #f6f8fa; font-weight: 600; }
        table.small td, table.small th { padding: 2px 6px; font-size: 12px; border: none; }
        td.num, .num { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: nowrap; font-size: 12px; }
        .hbar { height: 10px; background: #54aeff; border-radius: 2px; min-width: 1px; }
        .text { font-size: 15px; line-height: 1.9; unicode-bidi: isolate; }
        .w { padding: 1px 3px; border-radius: 3px; white-space: pre-wrap; }
        .warn { margin-top: 6px; padding: 4px 8px; background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; font-size: 12px; color: #7d4e00; }
        .controls { display: flex; gap: 10px; align-items: center; } .controls input { width: 320px; padding: 4px 6px; }
        """;

    /// <summary>
    /// Renders rows on demand: the filtered, sorted index list is rebuilt on every search or sort; rows are appended
    /// 200 at a time when the "more" marker scrolls into view. Only textContent and style properties are set.
    /// When the first rows are on screen it records the time since navigation start in body's data-rendered-ms.
    /// </summary>
    private const string Script = """
        (function () {
          'use strict';
          var data = JSON.parse(document.getElementById('data').textContent);
          var rows = data.rows, tbody = document.querySelector('#rows tbody'), more = document.getElementById('more');
          var q = document.getElementById('q'), sort = document.getElementById('sort'), count = document.getElementById('count');
          var PAGE = 200, order = [], shown = 0;
          function num(x) { return typeof x === 'string' ? Number(x) : x; }
          function fmt(x, digits) { x = num(x); return isFinite(x) ? x.toExponential(digits) : String(x); }
          function fixed(x) { x = num(x); return isFinite(x) ? x.toFixed(4) : String(x); }
          function prob(x) { x = num(x); return x === null || isNaN(x) ? -Infinity : x; }
          function colour(s) {
            s = Math.max(-1, Math.min(1, s)); var a = Math.abs(s), c = s >= 0 ? [26, 152, 80] : [215, 48, 39];
            function mix(v) { return Math.round(255 + (v - 255) * a); }
            return ['rgb(' + mix(c[0]) + ',' + mix(c[1]) + ',' + mix(c[2]) + ')', a > 0.6 ? '#ffffff' : '#1f2328'];
          }
          function cell(tr, text, cls) { var td = document.createElement('td'); if (cls) td.className = cls; if (text !== null) td.textContent = text; tr.appendChild(td); return td; }
          function note(parent, text, cls) { var d = document.createElement('div'); d.className = cls || 'note'; d.textContent = text; parent.appendChild(d); }
          function render(r) {
            var tr = document.createElement('tr');
            cell(tr, r.i, 'num');
            var td = cell(tr, null), div = document.createElement('div');
            div.className = 'text'; div.dir = 'auto';
            var max = 0, k, w;
            for (k = 0; k < r.w.length; k++) { w = num(r.w[k][1]); if (isFinite(w)) max = Math.max(max, Math.abs(w)); }
            for (k = 0; k < r.w.length; k++) {
              var span = document.createElement('span'), s = num(r.w[k][1]);
              var c = colour(max > 0 && isFinite(s) ? s / max : 0);
              span.className = 'w'; span.style.background = c[0]; span.style.color = c[1];
              span.textContent = r.w[k][0]; span.title = r.w[k][0] + ': ' + (isFinite(s) ? s.toFixed(4) : String(s));
              if (k > 0) div.appendChild(document.createTextNode(' '));
              div.appendChild(span);
            }
            td.appendChild(div);
            if (r.o) note(td, '⚠ relative delta ' + fmt(r.r, 2) + ' is over the threshold: the scores do not add up to f(x) − f(x0)', 'warn');
            if (r.n) note(td, '⚠ non-finite values in this result', 'warn');
            if (r.k) note(td, '⚠ weak reference: the scores may add up exactly and still say little', 'warn');
            var p = cell(tr, null); p.textContent = r.p;
            note(p, r.pr !== null ? 'p = ' + fixed(r.pr) : r.v !== undefined ? 'value = ' + fixed(r.v) : 'no probability');
            cell(tr, r.g);
            var d = cell(tr, null, 'num'); d.textContent = 'delta ' + fmt(r.d, 2); note(d, 'relative ' + fmt(r.r, 2));
            return tr;
          }
          function page() {
            var frag = document.createDocumentFragment(), end = Math.min(order.length, shown + PAGE);
            for (; shown < end; shown++) frag.appendChild(render(rows[order[shown]]));
            tbody.appendChild(frag);
            count.textContent = 'showing ' + shown + ' of ' + order.length + (order.length === rows.length ? '' : ' matching (' + rows.length + ' in all)');
            more.textContent = shown < order.length ? 'scroll for more…' : '';
          }
          function key(mode) {
            if (mode === 'delta') return function (a, b) { return absNum(rows[b].d) - absNum(rows[a].d) || a - b; };
            if (mode === 'rel') return function (a, b) { return absNum(rows[b].r) - absNum(rows[a].r) || a - b; };
            if (mode === 'prob') return function (a, b) { return prob(rows[b].pr) - prob(rows[a].pr) || a - b; };
            if (mode === 'probasc') return function (a, b) { return prob(rows[a].pr) - prob(rows[b].pr) || a - b; };
            if (mode === 'pred') return function (a, b) { return rows[a].p < rows[b].p ? -1 : rows[a].p > rows[b].p ? 1 : prob(rows[b].pr) - prob(rows[a].pr) || a - b; };
            return null;
          }
          function absNum(x) { x = Math.abs(num(x)); return isNaN(x) ? Infinity : x; }
          function update() {
            var needle = q.value.trim().toLowerCase(), i;
            order = [];
            for (i = 0; i < rows.length; i++)
              if (!needle || rows[i].t.toLowerCase().indexOf(needle) >= 0 || rows[i].i.toLowerCase().indexOf(needle) >= 0) order.push(i);
            var compare = key(sort.value);
            if (compare) order.sort(compare);
            tbody.textContent = ''; shown = 0; page();
          }
          var timer = null;
          q.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(update, 150); });
          sort.addEventListener('change', update);
          if ('IntersectionObserver' in window)
            new IntersectionObserver(function (entries) { if (entries[0].isIntersecting && shown < order.length) page(); }).observe(more);
          more.addEventListener('click', page);
          update();
          document.body.setAttribute('data-rendered-ms', String(Math.round(performance.now())));
          document.body.setAttribute('data-rows-shown', String(shown));
        })();
        """;
}
