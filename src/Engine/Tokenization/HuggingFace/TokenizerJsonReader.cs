using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>
/// What tokenizer_config.json / special_tokens_map.json say on top of tokenizer.json. As BertTokenizerFast does,
/// an explicit do_lower_case, strip_accents or tokenize_chinese_chars replaces the BertNormalizer's setting;
/// without them the normalizer in tokenizer.json decides.
/// </summary>
internal sealed record TokenizerJsonOptions(bool? LowerCase = null, bool? StripAccents = null, bool? ChineseChars = null,
    string? PadToken = null, string? MaskToken = null, string? UnkToken = null);

/// <summary>Reads a Hugging Face tokenizer.json into a <see cref="TokenizerPipeline"/>; every unsupported part is an error naming it.</summary>
internal static class TokenizerJsonReader
{
    public static PipelineTokenizer Load(string path, TokenizerJsonOptions options)
    {
        JsonElement root;
        try
        {
            using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(path));
            root = doc.RootElement.Clone();
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"'{path}' cannot be read as JSON: {e.Message}", path, inner: e);
        }

        try
        {
            return Build(root, path, options);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException or ArgumentException)
        {
            throw new ModelLoadException($"'{path}' is not a valid tokenizer.json: {e.Message}", path, inner: e);
        }
    }

    private static PipelineTokenizer Build(JsonElement root, string path, TokenizerJsonOptions options)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new ModelLoadException($"'{path}' is not a JSON object.", path);
        }

        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out JsonElement addedJson) && addedJson.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement a in addedJson.EnumerateArray())
            {
                added.Add(new AddedToken(a.GetProperty("id").GetInt32(), a.GetProperty("content").GetString() ?? "",
                    Bool(a, "special") ?? false, Bool(a, "normalized") ?? !(Bool(a, "special") ?? false),
                    Bool(a, "lstrip") ?? false, Bool(a, "rstrip") ?? false, Bool(a, "single_word") ?? false));
            }
        }

        ITextNormalizer? normalizer = Object(root, "normalizer") is { } n ? Normalizer(n, path, options) : null;
        IPreTokenizer? preTokenizer = Object(root, "pre_tokenizer") is { } p ? PreTokenizer(p, path) : null;
        JsonElement modelJson = Object(root, "model")
            ?? throw new ModelLoadException($"'{path}' has no \"model\" section.", path, "model");
        ITokenModel model = Model(modelJson, path);

        var idOf = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach ((string token, int id) in model.Vocab)
        {
            idOf.TryAdd(token, id);
        }

        foreach (AddedToken t in added)
        {
            idOf[t.Content] = t.Id;
        }

        PostProcessing post = Object(root, "post_processor") is { } pp
            ? PostProcessor(pp, path, idOf)
            : throw new ModelLoadException(
                $"'{path}' has no post_processor, so the start and end tokens the model was trained with ([CLS]/[SEP], <s>/</s>) are not known.",
                path, "post_processor");

        int Find(string what, string? configured, int? fromFile, params string[] conventional)
        {
            if (configured is not null)
            {
                return idOf.TryGetValue(configured, out int c)
                    ? c
                    : throw new ModelLoadException($"'{path}' has no {what} '{configured}' (named by tokenizer_config.json).", path, what);
            }

            if (fromFile is { } f)
            {
                return f;
            }

            foreach (string name in conventional)
            {
                if (idOf.TryGetValue(name, out int id))
                {
                    return id;
                }
            }

            throw new ModelLoadException(
                $"'{path}' has no {what}: looked for {string.Join(", ", conventional.Select(c => $"'{c}'"))}; name it in tokenizer_config.json.", path, what);
        }

        int? paddingId = Object(root, "padding") is { } padding && padding.TryGetProperty("pad_id", out JsonElement pid) && pid.ValueKind == JsonValueKind.Number
            ? pid.GetInt32()
            : null;
        int pad = Find("pad_token", options.PadToken, paddingId, "[PAD]", "<pad>");
        int unk = Find("unk_token", options.UnkToken, model.UnkId, "[UNK]", "<unk>");
        int mask = Find("mask_token", options.MaskToken, null, "[MASK]", "<mask>");
        return new PipelineTokenizer(new TokenizerPipeline(path, normalizer, preTokenizer, model, added, post, pad, unk, mask));
    }

    private static ITextNormalizer Normalizer(JsonElement n, string path, TokenizerJsonOptions options)
    {
        string type = Type(n, path, "normalizer");
        switch (type)
        {
            case "BertNormalizer":
                bool lowercase = options.LowerCase ?? Bool(n, "lowercase") ?? true;
                bool? strip = options.StripAccents ?? (options.LowerCase is null ? Bool(n, "strip_accents") : null);
                return new BertNormalizer(Bool(n, "clean_text") ?? true, options.ChineseChars ?? Bool(n, "handle_chinese_chars") ?? true,
                    strip ?? lowercase, lowercase);
            case "Lowercase":
                return new LowercaseNormalizer();
            case "StripAccents":
                return new StripAccentsNormalizer();
            case "NFC":
                return new UnicodeNormalizer(NormalizationForm.FormC);
            case "NFD":
                return new UnicodeNormalizer(NormalizationForm.FormD);
            case "NFKC":
                return new UnicodeNormalizer(NormalizationForm.FormKC);
            case "NFKD":
                return new UnicodeNormalizer(NormalizationForm.FormKD);
            case "Strip":
                return new StripNormalizer(Bool(n, "strip_left") ?? true, Bool(n, "strip_right") ?? true);
            case "Prepend":
                return new PrependNormalizer(n.GetProperty("prepend").GetString() ?? "");
            case "Replace":
                return new ReplaceNormalizer(Pattern(n, path, "normalizer"), n.GetProperty("content").GetString() ?? "");
            case "Precompiled":
                string? b64 = n.TryGetProperty("precompiled_charsmap", out JsonElement cm) && cm.ValueKind == JsonValueKind.String ? cm.GetString() : null;
                return new PrecompiledNormalizer(new PrecompiledCharsMap(b64 is null ? [0, 0, 0, 0] : Convert.FromBase64String(b64), path));
            case "Nmt":
                return new NmtNormalizer();
            case "Sequence":
                return new SequenceNormalizer(n.GetProperty("normalizers").EnumerateArray().Select(x => Normalizer(x, path, options)).ToList());
            default:
                throw new ModelLoadException($"'{path}': the normalizer type '{type}' is not supported.", path, "normalizer.type");
        }
    }

    private static IPreTokenizer PreTokenizer(JsonElement p, string path)
    {
        string type = Type(p, path, "pre_tokenizer");
        return type switch
        {
            "BertPreTokenizer" => new BertPreTokenizer(),
            "Whitespace" => new WhitespacePreTokenizer(),
            "WhitespaceSplit" => new WhitespaceSplitPreTokenizer(),
            "Punctuation" => new PunctuationPreTokenizer(Splitting.ParseBehavior(Str(p, "behavior"), path)),
            "Digits" => new DigitsPreTokenizer(Bool(p, "individual_digits") ?? false),
            "ByteLevel" => new ByteLevelPreTokenizer(Bool(p, "add_prefix_space") ?? true, Bool(p, "use_regex") ?? true),
            "Metaspace" => new MetaspacePreTokenizer(Str(p, "replacement") ?? "\u2581",
                Str(p, "prepend_scheme") ?? ((Bool(p, "add_prefix_space") ?? true) ? "always" : "never"), Bool(p, "split") ?? true),
            "CharDelimiterSplit" => new SplitPreTokenizer(new Regex(Regex.Escape(Str(p, "delimiter") ?? " "), RegexOptions.CultureInvariant), SplitBehavior.Removed, false),
            "Split" => new SplitPreTokenizer(Pattern(p, path, "pre_tokenizer"), Splitting.ParseBehavior(Str(p, "behavior"), path), Bool(p, "invert") ?? false),
            "Sequence" => new SequencePreTokenizer(p.GetProperty("pretokenizers").EnumerateArray().Select(x => PreTokenizer(x, path)).ToList()),
            _ => throw new ModelLoadException($"'{path}': the pre_tokenizer type '{type}' is not supported.", path, "pre_tokenizer.type"),
        };
    }

    private static ITokenModel Model(JsonElement m, string path)
    {
        string? type = Str(m, "type");
        if (type is null)
        {
            // Files written before "type" was serialized: the shape of the vocabulary tells.
            type = m.TryGetProperty("vocab", out JsonElement v) && v.ValueKind == JsonValueKind.Array ? "Unigram"
                : m.TryGetProperty("merges", out _) ? "BPE" : "WordPiece";
        }

        switch (type)
        {
            case "WordPiece":
                return new WordPieceModel(Vocab(m, path), Str(m, "unk_token") ?? "[UNK]", Str(m, "continuing_subword_prefix") ?? "##",
                    m.TryGetProperty("max_input_chars_per_word", out JsonElement max) && max.ValueKind == JsonValueKind.Number ? max.GetInt32() : 100, path);
            case "BPE":
                var merges = new List<(string, string)>();
                if (m.TryGetProperty("merges", out JsonElement mj) && mj.ValueKind == JsonValueKind.Array)
                {
                    foreach (JsonElement e in mj.EnumerateArray())
                    {
                        string[] parts = e.ValueKind == JsonValueKind.Array
                            ? e.EnumerateArray().Select(x => x.GetString() ?? "").ToArray()
                            : (e.GetString() ?? "").Split(' ');
                        if (parts.Length != 2)
                        {
                            throw new ModelLoadException($"'{path}' has a bad BPE merge {e.GetRawText()} (merge {merges.Count + 1}).", path, "model.merges");
                        }

                        merges.Add((parts[0], parts[1]));
                    }
                }

                return new BpeModel(Vocab(m, path), merges, Str(m, "unk_token"), Str(m, "continuing_subword_prefix"), Str(m, "end_of_word_suffix"),
                    Bool(m, "fuse_unk") ?? false, Bool(m, "byte_fallback") ?? false, Bool(m, "ignore_merges") ?? false, path);
            case "Unigram":
                var pieces = m.GetProperty("vocab").EnumerateArray()
                    .Select(e => (e[0].GetString() ?? "", e[1].GetDouble())).ToList();
                int unkId = m.TryGetProperty("unk_id", out JsonElement u) && u.ValueKind == JsonValueKind.Number
                    ? u.GetInt32()
                    : throw new ModelLoadException($"'{path}': the Unigram model has no unk_id.", path, "model.unk_id");
                return new UnigramModel(pieces, unkId, Bool(m, "byte_fallback") ?? false, _ => true, path);
            default:
                throw new ModelLoadException($"'{path}': the model type '{type}' is not supported (WordPiece, BPE and Unigram are).", path, "model.type");
        }
    }

    private static PostProcessing PostProcessor(JsonElement p, string path, Dictionary<string, int> idOf)
    {
        string type = Type(p, path, "post_processor");
        (int, string) Pair(string name)
        {
            JsonElement pair = p.GetProperty(name);
            return (pair[1].GetInt32(), pair[0].GetString() ?? "");
        }

        switch (type)
        {
            case "BertProcessing":
                return new PostProcessing([Pair("cls")], [Pair("sep")], TrimOffsets: false);
            case "RobertaProcessing":
                return new PostProcessing([Pair("cls")], [Pair("sep")], Bool(p, "trim_offsets") ?? true);
            case "ByteLevel":
                return new PostProcessing([], [], Bool(p, "trim_offsets") ?? true);
            case "TemplateProcessing":
                var prefix = new List<(int, string)>();
                var suffix = new List<(int, string)>();
                bool seenSequence = false;
                JsonElement specials = p.TryGetProperty("special_tokens", out JsonElement st) ? st : default;
                foreach (JsonElement item in p.GetProperty("single").EnumerateArray())
                {
                    if (item.TryGetProperty("Sequence", out _))
                    {
                        seenSequence = true;
                        continue;
                    }

                    string id = item.GetProperty("SpecialToken").GetProperty("id").GetString() ?? "";
                    List<(int, string)> side = seenSequence ? suffix : prefix;
                    if (specials.ValueKind == JsonValueKind.Object && specials.TryGetProperty(id, out JsonElement entry))
                    {
                        int[] ids = entry.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
                        string[] tokens = entry.GetProperty("tokens").EnumerateArray().Select(x => x.GetString() ?? "").ToArray();
                        side.AddRange(ids.Zip(tokens));
                    }
                    else if (idOf.TryGetValue(id, out int known))
                    {
                        side.Add((known, id));
                    }
                    else
                    {
                        throw new ModelLoadException($"'{path}': the post_processor template names '{id}', which has no id.", path, "post_processor.special_tokens");
                    }
                }

                return new PostProcessing(prefix, suffix, TrimOffsets: false);
            case "Sequence":
                var parts = p.GetProperty("processors").EnumerateArray().Select(x => PostProcessor(x, path, idOf)).ToList();
                return new PostProcessing(parts.SelectMany(x => x.Prefix).ToList(), parts.SelectMany(x => x.Suffix).ToList(), parts.Any(x => x.TrimOffsets));
            default:
                throw new ModelLoadException($"'{path}': the post_processor type '{type}' is not supported.", path, "post_processor.type");
        }
    }

    private static Dictionary<string, int> Vocab(JsonElement m, string path)
    {
        if (!m.TryGetProperty("vocab", out JsonElement v) || v.ValueKind != JsonValueKind.Object)
        {
            throw new ModelLoadException($"'{path}': the model has no vocab object.", path, "model.vocab");
        }

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty e in v.EnumerateObject())
        {
            int id = e.Value.GetInt32();
            if (id < 0)
            {
                throw new ModelLoadException($"'{path}' gives '{e.Name}' the negative id {id}.", path, "model.vocab");
            }

            vocab[e.Name] = id;
        }

        return vocab;
    }

    private static Regex Pattern(JsonElement e, string path, string where)
    {
        JsonElement pattern = e.GetProperty("pattern");
        if (pattern.TryGetProperty("String", out JsonElement s))
        {
            return new Regex(Regex.Escape(s.GetString() ?? ""), RegexOptions.CultureInvariant);
        }

        if (pattern.TryGetProperty("Regex", out JsonElement r))
        {
            try
            {
                return new Regex(r.GetString() ?? "", RegexOptions.CultureInvariant);
            }
            catch (ArgumentException ex)
            {
                throw new ModelLoadException($"'{path}': the {where} regex '{r.GetString()}' is not supported here: {ex.Message}", path, where + ".pattern");
            }
        }

        throw new ModelLoadException($"'{path}': the {where} pattern is neither String nor Regex.", path, where + ".pattern");
    }

    private static string Type(JsonElement e, string path, string where) =>
        Str(e, "type") ?? throw new ModelLoadException($"'{path}': the {where} has no type.", path, where + ".type");

    private static JsonElement? Object(JsonElement e, string name) =>
        e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.Object ? v : null;

    private static bool? Bool(JsonElement e, string name) =>
        e.TryGetProperty(name, out JsonElement v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out JsonElement v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
