using System.Text.Json;

namespace AttributionFleet.Engine.Onnx;

/// <summary>
/// The tokenizer files an ONNX import is given: vocab.txt (WordPiece), tokenizer.json (any model type), vocab.json with
/// merges.txt beside it (byte-level BPE), or a SentencePiece model (sentencepiece.bpe.model, spiece.model). The casing
/// comes from the files, never assumed: tokenizer_config.json's do_lower_case or tokenizer.json's normalizer (given, or
/// beside vocab.txt); failing both, a WordPiece vocabulary with upper-case tokens is cased and one without is not.
/// </summary>
public sealed class ImportVocabulary
{
    private readonly string _path;
    private readonly List<(string From, string To)> _files = [];

    /// <summary>"wordpiece", "byte-level-bpe" or "sentencepiece".</summary>
    public string Kind { get; private init; } = "wordpiece";
    /// <summary>Number of tokens (0 when the file does not say without a SentencePiece parser).</summary>
    public int Size { get; private set; }
    public int? PadId { get; private set; }
    public bool LowerCase { get; private set; }
    /// <summary>Which file decided <see cref="LowerCase"/>.</summary>
    public string CasingSource { get; private set; } = "";

    private ImportVocabulary(string path, string kind)
    {
        _path = path;
        Kind = kind;
    }

    public static ImportVocabulary Read(string path)
    {
        var name = Path.GetFileName(path);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (name.EndsWith(".json", StringComparison.OrdinalIgnoreCase) && name != "vocab.json")
            return FromTokenizerJson(path);
        if (name == "vocab.json")
        {
            var merges = Path.Combine(dir, "merges.txt");
            if (!File.Exists(merges))
                throw new ModelLoadException($"'{path}' is a byte-level BPE vocabulary but '{merges}' is missing beside it; give both files (or tokenizer.json)", merges);
            var v = new ImportVocabulary(path, "byte-level-bpe") { LowerCase = false, CasingSource = "byte-level BPE (never lower-cases)" };
            var vocab = ParseJson(path).RootElement;
            v.Size = vocab.EnumerateObject().Count();
            v.PadId = vocab.TryGetProperty("<pad>", out var pad) ? pad.GetInt32() : null;
            v._files.Add((path, "vocab.json"));
            v._files.Add((merges, "merges.txt"));
            return v;
        }
        if (name.EndsWith(".model", StringComparison.OrdinalIgnoreCase))
        {
            var v = new ImportVocabulary(path, "sentencepiece") { LowerCase = false, CasingSource = "SentencePiece (its own normalizer)", PadId = 1 };
            v._files.Add((path, name));
            return v;
        }
        return FromVocabTxt(path, dir);
    }

    private static ImportVocabulary FromVocabTxt(string path, string dir)
    {
        var tokens = File.ReadLines(path).ToList();
        var v = new ImportVocabulary(path, "wordpiece") { Size = tokens.Count };
        int pad = tokens.IndexOf("[PAD]");
        v.PadId = pad >= 0 ? pad : null;
        v._files.Add((path, "vocab.txt"));
        var config = Path.Combine(dir, "tokenizer_config.json");
        var tokenizerJson = Path.Combine(dir, "tokenizer.json");
        if (File.Exists(config) && ParseJson(config).RootElement is { } c && c.TryGetProperty("do_lower_case", out var lower)
            && lower.ValueKind is JsonValueKind.True or JsonValueKind.False)
        {
            v.LowerCase = lower.GetBoolean();
            v.CasingSource = config;
        }
        else if (File.Exists(tokenizerJson) && NormalizerLowerCase(ParseJson(tokenizerJson).RootElement) is bool fromJson)
        {
            v.LowerCase = fromJson;
            v.CasingSource = tokenizerJson;
        }
        else
        {
            // A lower-cased vocabulary has no upper-case ASCII letters outside its [SPECIAL] tokens; a cased one has many
            // (bert-base-uncased's does keep a few non-ASCII capitals, so only A-Z count).
            bool upper = tokens.Any(t => !(t.StartsWith('[') && t.EndsWith(']')) && t.Any(ch => ch is >= 'A' and <= 'Z'));
            v.LowerCase = !upper;
            v.CasingSource = $"{path} (its tokens {(upper ? "have" : "have no")} upper-case letters)";
        }
        return v;
    }

    private static ImportVocabulary FromTokenizerJson(string path)
    {
        var root = ParseJson(path).RootElement;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new ModelLoadException($"'{path}' is not a tokenizer.json: it has no 'model'", path, "model");
        var type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        var kind = type switch
        {
            "WordPiece" => "wordpiece",
            "BPE" => "byte-level-bpe",
            "Unigram" => "sentencepiece",
            _ => throw new ModelLoadException($"'{path}': tokenizer model type '{type}' is not supported (WordPiece, BPE, Unigram)", path, "model.type"),
        };
        var v = new ImportVocabulary(path, kind);
        if (model.TryGetProperty("vocab", out var vocab))
        {
            if (vocab.ValueKind == JsonValueKind.Object)
            {
                v.Size = vocab.EnumerateObject().Count();
                foreach (var special in new[] { "[PAD]", "<pad>" })
                    if (vocab.TryGetProperty(special, out var id)) { v.PadId = id.GetInt32(); break; }
            }
            else if (vocab.ValueKind == JsonValueKind.Array)
            {
                var pieces = vocab.EnumerateArray().Select(e => e[0].GetString()).ToList();
                v.Size = pieces.Count;
                int pad = pieces.IndexOf("<pad>");
                v.PadId = pad >= 0 ? pad : null;
            }
        }
        v.LowerCase = NormalizerLowerCase(root) ?? false;
        v.CasingSource = $"{path} (normalizer)";
        v._files.Add((path, "tokenizer.json"));
        return v;
    }

    /// <summary>Whether tokenizer.json's normalizer lower-cases: BertNormalizer's "lowercase" (default true) or a Lowercase step.</summary>
    private static bool? NormalizerLowerCase(JsonElement root)
    {
        if (!root.TryGetProperty("normalizer", out var n)) return null;
        if (n.ValueKind == JsonValueKind.Null) return false;
        bool? Of(JsonElement e)
        {
            var type = e.TryGetProperty("type", out var t) ? t.GetString() : null;
            if (type == "BertNormalizer") return !e.TryGetProperty("lowercase", out var l) || l.ValueKind != JsonValueKind.False;
            if (type == "Lowercase") return true;
            if (type == "Sequence" && e.TryGetProperty("normalizers", out var list))
                return list.EnumerateArray().Select(Of).Any(x => x == true);
            return false;
        }
        return Of(n);
    }

    private static JsonDocument ParseJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new ModelLoadException($"'{path}' is not valid JSON: {e.Message}", path, inner: e); }
    }

    /// <summary>Copies the tokenizer files into the model folder and writes tokenizer_config.json with the casing found.</summary>
    public void CopyTo(string outDir, int maxLength)
    {
        foreach (var (from, to) in _files) File.Copy(from, Path.Combine(outDir, to), overwrite: true);
        File.WriteAllText(Path.Combine(outDir, "tokenizer_config.json"), JsonSerializer.Serialize(new
        {
            do_lower_case = LowerCase,
            model_max_length = maxLength,
        }, new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    public override string ToString() => $"{Kind} vocabulary {_path}";
}
