using System.Text.Json;

namespace AttributionFleet.Cli.Report;

/// <summary>One word of a result line for the job report: its text and score (the sum of its pieces' scores).</summary>
public sealed record ReportWord(string Text, double Score);

/// <summary>One class's words (for a line of <c>--target all</c>, every class; otherwise the explained target).</summary>
public sealed record ReportClass(string Label, IReadOnlyList<ReportWord> Words);

/// <summary>Faithfulness figures of one line (the means over k, and the two AOPCs).</summary>
public sealed record ReportFaithfulness(double Comprehensiveness, double Sufficiency, double AopcDeletion, double AopcInsertion);

/// <summary>One line of a results file, as the job report needs it.</summary>
public sealed record ReportRow(
    string Id, string Text, IReadOnlyList<ReportWord> Words, string Label, double Probability, string Target,
    double Delta, double RelativeDelta, bool? OverThreshold, bool NonFinite, bool? WeakReference, ReportFaithfulness? Faithfulness,
    IReadOnlyList<ReportClass> Classes);

/// <summary>A results file is unreadable: the message names the file, the line and the field.</summary>
public sealed class ResultsFormatException(string message) : Exception(message);

/// <summary>
/// Reads the JSON lines of <c>fleet explain --json</c> and of <c>fleet submit --out</c> / <c>fleet results --out</c> (the
/// same fields: id, text, tokens, scores, prediction, target, delta, relative_delta, …; the fleet's lines add
/// <c>over_threshold</c>). Words come from a line's <c>words</c> array when it has one ({text, score, …}), else they are
/// merged from its pieces (tokens and scores). Optional: <c>weak_reference</c>, <c>faithfulness</c>, <c>classes</c>.
/// </summary>
public static class JobResults
{
    public static List<ReportRow> Read(string path)
    {
        if (!File.Exists(path)) throw new ResultsFormatException($"results file not found: {path}");
        var rows = new List<ReportRow>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
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
        var words = e.TryGetProperty("words", out var w) && w.ValueKind == JsonValueKind.Array
            ? w.EnumerateArray().Select((x, i) => new ReportWord(String(x, "text", $"words[{i}]."), Number(x, "score", $"words[{i}]."))).ToList()
            : tokens is not null
                ? Merge(text, tokens, scores, "tokens")
                : throw new ResultsFormatException("missing field 'words' or 'tokens'");
        double delta = Number(e, "delta"), relative = Number(e, "relative_delta");
        bool nonFinite = !double.IsFinite(delta) || !double.IsFinite(relative) || scores.Any(s => !double.IsFinite(s));
        var classes = new List<ReportClass>();
        if (e.TryGetProperty("classes", out var cs) && cs.ValueKind == JsonValueKind.Array && tokens is not null)
        {
            int i = 0;
            foreach (var c in cs.EnumerateArray())
            {
                var classScores = Numbers(c, "scores", $"classes[{i}].");
                if (classScores.Length != tokens.Count) throw new ResultsFormatException($"classes[{i}].scores has {classScores.Length} values for {tokens.Count} tokens");
                nonFinite |= classScores.Any(s => !double.IsFinite(s));
                classes.Add(new ReportClass(String(Object(c, "target", $"classes[{i}]."), "label", $"classes[{i}].target."), Merge(text, tokens, classScores, $"classes[{i}]")));
                i++;
            }
        }
        else classes.Add(new ReportClass(String(target, "label", "target."), words));
        ReportFaithfulness? faithfulness = null;
        if (e.TryGetProperty("faithfulness", out var f) && f.ValueKind == JsonValueKind.Object)
            faithfulness = new ReportFaithfulness(Number(f, "comprehensiveness_mean", "faithfulness."), Number(f, "sufficiency_mean", "faithfulness."),
                Number(f, "aopc_deletion", "faithfulness."), Number(f, "aopc_insertion", "faithfulness."));
        return new ReportRow(id, text, words, String(prediction, "label", "prediction."), Number(prediction, "probability", "prediction."),
            String(target, "label", "target."), delta, relative, Bool(e, "over_threshold"), nonFinite, Bool(e, "weak_reference"), faithfulness, classes);
    }

    private static List<ReportWord> Merge(string text, List<string> tokens, double[] scores, string field)
    {
        if (scores.Length != tokens.Count) throw new ResultsFormatException($"{field}: {tokens.Count} tokens but {scores.Length} scores");
        return Words.Merge(text, tokens, scores).Where(x => !x.Special).Select(x => new ReportWord(x.Text, x.Score)).ToList();
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

    /// <summary>A number, or the named literals the fleet writes for non-finite values ("NaN", "Infinity", "-Infinity").</summary>
    private static double Number(JsonElement e, string name, string prefix = "")
    {
        if (!e.TryGetProperty(name, out var v)) throw new ResultsFormatException($"missing number '{prefix}{name}'");
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
        return v.EnumerateArray().Select((x, i) => Number(x) ?? throw new ResultsFormatException($"{prefix}{name}[{i}] must be a number, got {Clip(x.GetRawText())}")).ToArray();
    }

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
