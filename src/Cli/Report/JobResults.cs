using System.Text.Json;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Report;

/// <summary>One word of a result line for the job report: its text and score (the sum of its pieces' scores).</summary>
public sealed record ReportWord(string Text, double Score);

/// <summary>One class's words (for a line of <c>--target all</c>, every class; otherwise the explained target).</summary>
public sealed record ReportClass(string Label, IReadOnlyList<ReportWord> Words);

/// <summary>Faithfulness figures of one line (the means over k, and the two AOPCs).</summary>
public sealed record ReportFaithfulness(double Comprehensiveness, double Sufficiency, double AopcDeletion, double AopcInsertion);

/// <summary>
/// One line of a results file, as the job report needs it. <see cref="Probability"/> is null where the head has none
/// (a regression value, an embedding: <see cref="Value"/> is then the output) and NaN where it was not finite.
/// </summary>
public sealed record ReportRow(
    string Id, string Text, IReadOnlyList<ReportWord> Words, string Label, double? Probability, string Target,
    double Delta, double RelativeDelta, bool? OverThreshold, bool NonFinite, bool? WeakReference, ReportFaithfulness? Faithfulness,
    IReadOnlyList<ReportClass> Classes)
{
    public double? Value { get; init; }
}

/// <summary>A results file is unreadable: the message names the file, the line and the field.</summary>
public sealed class ResultsFormatException(string message) : Exception(message);

/// <summary>
/// Reads the JSON lines of <c>fleet explain --json</c> and of <c>fleet submit --out</c> / <c>fleet results --out</c> (the
/// same fields: id, text, tokens, scores, prediction, target, delta, relative_delta, …; the fleet's lines add
/// <c>over_threshold</c>). Words come from a line's <c>words</c> array when it has one ({text, score, pieces, special}:
/// the engine's <see cref="WordSpans"/> through the tokenizer's offsets; a <c>classes</c> row's words are the same words,
/// its scores summed over the same pieces), else they are merged from the pieces by <see cref="WordSpans"/> (tokens and
/// scores only: the fleet's lines carry no offsets). Non-finite numbers are JSON null (older lines: the strings "NaN",
/// "Infinity"); <c>status</c> "non_finite" marks a failed text. A regression head's prediction has no probability (null)
/// and a <c>value</c>. Optional: <c>status</c>, <c>weak_reference</c>, <c>faithfulness</c>, <c>classes</c>.
/// </summary>
public static class JobResults
{
    public static List<ReportRow> Read(string path)
    {
        if (Directory.Exists(path)) throw new ResultsFormatException($"{path}: is a directory, not a results file");
        if (!File.Exists(path)) throw new ResultsFormatException($"results file not found: {path}");
        try { return Read(path, File.ReadLines(path)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ResultsFormatException($"{path}: cannot read ({e.Message.ReplaceLineEndings(" ")})");
        }
    }

    private static List<ReportRow> Read(string path, IEnumerable<string> lines)
    {
        var rows = new List<ReportRow>();
        int lineNo = 0;
        foreach (var line in lines)
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new ResultsFormatException($"{path} line {lineNo}: not a JSON object ({e.Message.Split('.')[0]})"); }
            using (doc)
            {
                try { rows.Add(Row(doc.RootElement, rows.Count)); }
                catch (ResultsFormatException e) { throw new ResultsFormatException($"{path} line {lineNo}: {e.Message}"); }
            }
        }
        if (rows.Count == 0) throw new ResultsFormatException($"{path}: no results in the file");
        return rows;
    }

    private static ReportRow Row(JsonElement e, int index)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new ResultsFormatException("not a JSON object");
        var text = String(e, "text");
        var id = e.TryGetProperty("id", out var idValue) && idValue.ValueKind != JsonValueKind.Null
            ? (idValue.ValueKind == JsonValueKind.String ? idValue.GetString()! : idValue.GetRawText())
            : (index + 1).ToString();
        var prediction = Object(e, "prediction");
        var target = Object(e, "target");
        var tokens = e.TryGetProperty("tokens", out var t) && t.ValueKind == JsonValueKind.Array ? t.EnumerateArray().Select(x => x.GetString() ?? "").ToList() : null;
        var scores = Numbers(e, "scores");
        var spans = e.TryGetProperty("words", out var w) && w.ValueKind == JsonValueKind.Array ? Spans(w) : null;
        var words = spans is not null
            ? spans.Where(x => !x.Special).Select(x => new ReportWord(x.Text, x.Score)).ToList()
            : tokens is not null
                ? Merge(text, tokens, scores, "tokens")
                : throw new ResultsFormatException("missing field 'words' or 'tokens'");
        double delta = Number(e, "delta"), relative = Number(e, "relative_delta");
        var status = e.TryGetProperty("status", out var st) && st.ValueKind == JsonValueKind.String ? st.GetString() : null;
        bool nonFinite = status == NonFinite.Status.NonFinite || !double.IsFinite(delta) || !double.IsFinite(relative) || scores.Any(s => !double.IsFinite(s));
        var classes = new List<ReportClass>();
        if (e.TryGetProperty("classes", out var cs) && cs.ValueKind == JsonValueKind.Array && tokens is not null)
        {
            int i = 0;
            foreach (var c in cs.EnumerateArray())
            {
                var classScores = Numbers(c, "scores", $"classes[{i}].");
                if (classScores.Length != tokens.Count) throw new ResultsFormatException($"classes[{i}].scores has {classScores.Length} values for {tokens.Count} tokens");
                nonFinite |= classScores.Any(s => !double.IsFinite(s));
                var classWords = spans is not null && spans.All(x => x.Pieces is not null)
                    ? spans.Where(x => !x.Special).Select(x => new ReportWord(x.Text, x.Pieces!.Sum(k => k >= 0 && k < classScores.Length ? classScores[k]
                        : throw new ResultsFormatException($"words: piece {k} is not a token index (0..{classScores.Length - 1})")))).ToList()
                    : Merge(text, tokens, classScores, $"classes[{i}]");
                classes.Add(new ReportClass(String(Object(c, "target", $"classes[{i}]."), "label", $"classes[{i}].target."), classWords));
                i++;
            }
        }
        else classes.Add(new ReportClass(String(target, "label", "target."), words));
        ReportFaithfulness? faithfulness = null;
        if (e.TryGetProperty("faithfulness", out var f) && f.ValueKind == JsonValueKind.Object)
            faithfulness = new ReportFaithfulness(Number(f, "comprehensiveness_mean", "faithfulness."), Number(f, "sufficiency_mean", "faithfulness."),
                Number(f, "aopc_deletion", "faithfulness."), Number(f, "aopc_insertion", "faithfulness."));
        // A head without probabilities (regression values, embeddings) writes probability null (and explain its head
        // and value); a non-finite probability is null too. Which of the two: the head, else the status (ok: none by
        // design), else (lines from before status) non-finite.
        var head = prediction.TryGetProperty("head", out var h) && h.ValueKind == JsonValueKind.String ? h.GetString() : null;
        double? value = prediction.TryGetProperty("value", out var v) && v.ValueKind != JsonValueKind.Null ? Number(v) : null;
        double? probability = Number(prediction, "probability", "prediction.");
        if (double.IsNaN(probability.Value) && prediction.GetProperty("probability").ValueKind == JsonValueKind.Null
            && (head is "regression" or "embedding" || head is null && status == NonFinite.Status.Ok))
            probability = null;
        if (probability is double pr && !double.IsFinite(pr)) nonFinite = true;
        return new ReportRow(id, text, words, String(prediction, "label", "prediction."), probability,
            String(target, "label", "target."), delta, relative, Bool(e, "over_threshold"), nonFinite, Bool(e, "weak_reference"), faithfulness, classes)
        { Value = value };
    }

    /// <summary>The <c>words</c> of a line of <c>fleet explain --json</c>.</summary>
    private static List<(string Text, double Score, bool Special, int[]? Pieces)> Spans(JsonElement words) =>
        words.EnumerateArray().Select((x, i) => (
            String(x, "text", $"words[{i}]."),
            Number(x, "score", $"words[{i}]."),
            Bool(x, "special") == true,
            x.TryGetProperty("pieces", out var p) && p.ValueKind == JsonValueKind.Array
                ? p.EnumerateArray().Select(k => k.ValueKind == JsonValueKind.Number && k.TryGetInt32(out var n) ? n
                    : throw new ResultsFormatException($"words[{i}].pieces must be token indices")).ToArray()
                : null)).ToList();

    /// <summary>Words from the pieces alone (no offsets in the line): the engine's <see cref="WordSpans.Merge(IReadOnlyList{string}, IReadOnlyList{double})"/>.</summary>
    private static List<ReportWord> Merge(string text, List<string> tokens, double[] scores, string field)
    {
        if (scores.Length != tokens.Count) throw new ResultsFormatException($"{field}: {tokens.Count} tokens but {scores.Length} scores");
        return WordSpans.Merge(tokens, scores).Where(x => !x.Special).Select(x => new ReportWord(x.Text, x.Score)).ToList();
    }

    private static JsonElement Object(JsonElement e, string name, string prefix = "") =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Object ? v : throw new ResultsFormatException($"missing object '{prefix}{name}'");

    private static string String(JsonElement e, string name, string prefix = "") =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new ResultsFormatException($"missing text field '{prefix}{name}'");

    private static bool? Bool(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) ? v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Null => null,
            _ => throw new ResultsFormatException($"field '{name}' must be true or false"),
        } : null;

    /// <summary>
    /// A number; null is a non-finite value (NaN: what explain and the fleet write for one), and so are the named
    /// literals of older lines ("NaN", "Infinity", "-Infinity"). A missing field is an error.
    /// </summary>
    private static double Number(JsonElement e, string name, string prefix = "")
    {
        if (!e.TryGetProperty(name, out var v)) throw new ResultsFormatException($"missing number '{prefix}{name}'");
        if (v.ValueKind == JsonValueKind.Null) return double.NaN;
        return Number(v) ?? throw new ResultsFormatException($"field '{prefix}{name}' must be a number, got {Clip(v.GetRawText())}");
    }

    private static double? Number(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Number => v.GetDouble(),
        JsonValueKind.String => v.GetString() switch { "NaN" => double.NaN, "Infinity" => double.PositiveInfinity, "-Infinity" => double.NegativeInfinity, _ => null },
        _ => null,
    };

    private static double[] Numbers(JsonElement e, string name, string prefix = "")
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind != JsonValueKind.Array) throw new ResultsFormatException($"missing array '{prefix}{name}'");
        return v.EnumerateArray().Select((x, i) => x.ValueKind == JsonValueKind.Null ? double.NaN
            : Number(x) ?? throw new ResultsFormatException($"{prefix}{name}[{i}] must be a number, got {Clip(x.GetRawText())}")).ToArray();
    }

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
