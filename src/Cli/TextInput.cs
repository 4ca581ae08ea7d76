using System.Text.Json;

namespace AttributionFleet.Cli;

/// <summary>One input text with its client id.</summary>
public sealed record InputText(string Id, string Text);

/// <summary>
/// Reads texts from the command line or a file: <c>.jsonl</c> (one object per line with "text" and an
/// optional "id"), anything else one text per line (blank lines skipped). Ids default to the 1-based line number.
/// </summary>
public static class TextInput
{
    public static List<InputText> Read(CommandLine cl)
    {
        var texts = new List<InputText>();
        var file = cl.Value("input");
        if (file is not null) texts.AddRange(ReadFile(file));
        int offset = texts.Count;
        texts.AddRange(cl.Positionals.Select((t, i) => new InputText((offset + i + 1).ToString(), t)).ToList());
        if (texts.Count == 0) throw new UsageException("no texts: give them as arguments or with --input FILE");
        return texts;
    }

    public static IEnumerable<InputText> ReadFile(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"input file not found: {path}");
        bool jsonl = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase);
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            if (!jsonl)
            {
                yield return new InputText(lineNo.ToString(), line);
                continue;
            }
            JsonElement root;
            try
            {
                using var doc = JsonDocument.Parse(line);
                root = doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new UsageException($"{path}:{lineNo}: invalid JSON ({e.Message})");
            }
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                throw new UsageException($"{path}:{lineNo}: each line needs a string field \"text\"");
            var id = root.TryGetProperty("id", out var idEl) ? idEl.ToString() : lineNo.ToString();
            yield return new InputText(id, text.GetString()!);
        }
    }
}
