using System.Buffers;
using System.Text;
using System.Text.Json;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli;

/// <summary>One input text with its client id and where it came from (<c>FILE:LINE</c> or <c>argument N</c>) for error messages.</summary>
public sealed record InputText(string Id, string Text, string Source = "");

/// <summary>
/// Reads texts from the command line or a file (<c>-</c> is stdin): <c>.jsonl</c> (one object per line with "text" and an
/// optional "id"), anything else one text per line (blank lines skipped). Ids default to the 1-based line number of the
/// file. A file must be UTF-8 text: a NUL byte or invalid UTF-8 is refused with the file and the byte offset (a binary
/// file is not a list of texts). Errors name the file's own line numbers.
/// </summary>
public static class TextInput
{
    public static List<InputText> Read(IReadOnlyList<string> arguments, string? inputFile, Func<Stream>? stdin = null)
    {
        var texts = new List<InputText>();
        if (inputFile is not null) texts.AddRange(ReadFile(inputFile, stdin));
        int offset = texts.Count;
        for (int i = 0; i < arguments.Count; i++)
        {
            if (TextContent.IsBlank(arguments[i])) throw new UsageException($"argument {i + 1}: the text is empty");
            texts.Add(new InputText((offset + i + 1).ToString(), arguments[i], $"argument {i + 1}"));
        }
        if (texts.Count == 0) throw new UsageException("no texts: give them as arguments or with --input FILE (--input - reads stdin)");
        return texts;
    }

    public static List<InputText> ReadFile(string path, Func<Stream>? stdin = null)
    {
        byte[] bytes;
        bool fromStdin = path == "-";
        string name = fromStdin ? "stdin" : path;
        try
        {
            if (fromStdin)
            {
                using var input = (stdin ?? Console.OpenStandardInput)();
                using var buffer = new MemoryStream();
                input.CopyTo(buffer);
                bytes = buffer.ToArray();
            }
            else
            {
                if (Directory.Exists(path)) throw new UsageException($"--input {path}: is a directory, not a file");
                if (!File.Exists(path)) throw new UsageException($"--input {path}: file not found");
                bytes = File.ReadAllBytes(path);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--input {name}: cannot read ({e.Message.ReplaceLineEndings(" ")})");
        }
        var content = Decode(bytes, name);
        bool jsonl = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase)
            || fromStdin && content.TrimStart().StartsWith('{');
        var texts = new List<InputText>();
        int lineNo = 0;
        foreach (var raw in content.Split('\n'))
        {
            lineNo++;
            var line = raw.EndsWith('\r') ? raw[..^1] : raw;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{name}:{lineNo}";
            if (!jsonl)
            {
                texts.Add(new InputText(lineNo.ToString(), line, where));
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
                throw new UsageException($"{where}: invalid JSON ({e.Message.ReplaceLineEndings(" ")})");
            }
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                throw new UsageException($"{where}: each line needs a string field \"text\"");
            var value = text.GetString()!;
            if (TextContent.IsBlank(value)) throw new UsageException($"{where}: the text is empty");
            var id = root.TryGetProperty("id", out var idEl) ? idEl.ToString() : lineNo.ToString();
            texts.Add(new InputText(id, value, where));
        }
        return texts;
    }

    /// <summary>UTF-8 (a BOM is skipped) without NUL bytes, else a usage error naming the byte offset.</summary>
    public static string Decode(byte[] bytes, string name)
    {
        ReadOnlySpan<byte> span = bytes;
        int start = span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? 3 : 0;
        int nul = span[start..].IndexOf((byte)0);
        int invalid = FirstInvalidUtf8(span[start..]);
        if (nul >= 0 && (invalid < 0 || nul <= invalid))
            throw new UsageException($"--input {name}: binary input refused (NUL byte at byte offset {start + nul}); give UTF-8 text");
        if (invalid >= 0)
            throw new UsageException($"--input {name}: binary input refused (invalid UTF-8 at byte offset {start + invalid}); give UTF-8 text");
        return Encoding.UTF8.GetString(span[start..]);
    }

    private static int FirstInvalidUtf8(ReadOnlySpan<byte> span)
    {
        int offset = 0;
        while (offset < span.Length)
        {
            var status = Rune.DecodeFromUtf8(span[offset..], out _, out int consumed);
            if (status != OperationStatus.Done) return offset;
            offset += consumed;
        }
        return -1;
    }
}
