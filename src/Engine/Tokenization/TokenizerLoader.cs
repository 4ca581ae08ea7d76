using System.Text;
using System.Text.Json;
using AttributionFleet.Engine.Tokenization.HuggingFace;

namespace AttributionFleet.Engine.Tokenization;

/// <summary>Loads the tokenizer of a model folder in Hugging Face layout.</summary>
public static class TokenizerLoader
{
    private static readonly HashSet<string> ByteLevelBpeModelTypes =
        new(StringComparer.OrdinalIgnoreCase) { "roberta", "longformer", "bart", "gpt2", "deberta", "led", "mvp" };

    private static readonly HashSet<string> WordPieceModelTypes =
        new(StringComparer.OrdinalIgnoreCase) { "bert", "distilbert", "electra", "mobilebert", "squeezebert", "funnel", "layoutlm" };

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// Loads the tokenizer of <paramref name="modelDir"/>, in this order: tokenizer.json, the whole Hugging Face
    /// pipeline (normalizer, pre-tokenizer, WordPiece/BPE/Unigram model, added tokens, post-processor; an explicit
    /// do_lower_case/strip_accents/tokenize_chinese_chars in tokenizer_config.json adjusts a BertNormalizer as
    /// BertTokenizerFast does); a SentencePiece model (sentencepiece.bpe.model, spiece.model, spm.model) for the
    /// model types whose id layout is known (xlm-roberta: fairseq ids; albert, deberta-v2: as they are); vocab.txt
    /// (WordPiece) or vocab.json + merges.txt (byte-level BPE) with the settings of tokenizer_config.json (and the
    /// token names of special_tokens_map.json). <paramref name="modelType"/> is config.json's "model_type"; for a
    /// type not known here the files present decide.
    /// </summary>
    /// <exception cref="ModelLoadException">A file is missing, unreadable or invalid; the message names it.</exception>
    public static ITextTokenizer Load(string modelDir, string modelType)
    {
        ArgumentNullException.ThrowIfNull(modelDir);
        if (!Directory.Exists(modelDir))
        {
            throw new ModelLoadException($"The model folder '{modelDir}' does not exist.", modelDir);
        }

        var config = new TokenizerConfig(modelDir);
        if (File.Exists(config.TokenizerJsonPath))
        {
            // As Hugging Face's fast tokenizers: tokenizer.json describes the whole pipeline and wins over the
            // vocabulary files; tokenizer_config.json only adjusts what BertTokenizerFast adjusts.
            return LoadTokenizerJson(config);
        }

        string vocabTxt = Path.Combine(modelDir, "vocab.txt");
        string vocabJson = Path.Combine(modelDir, "vocab.json");
        string? sentencePiece = SentencePieceTokenizers.FileNames.Select(f => Path.Combine(modelDir, f)).FirstOrDefault(File.Exists);
        SentencePieceIdLayout? layout = SentencePieceTokenizers.LayoutFor(modelType ?? "");
        if (layout is not null || (sentencePiece is not null && !File.Exists(vocabTxt) && !File.Exists(vocabJson)))
        {
            return LoadSentencePiece(modelDir, modelType ?? "", sentencePiece, layout, config);
        }

        bool bpe;
        if (ByteLevelBpeModelTypes.Contains(modelType ?? ""))
        {
            bpe = true;
        }
        else if (WordPieceModelTypes.Contains(modelType ?? ""))
        {
            bpe = false;
        }
        else if (File.Exists(vocabTxt) || File.Exists(vocabJson))
        {
            bpe = !File.Exists(vocabTxt);
        }
        else
        {
            bpe = string.Equals(config.TokenizerJsonModelType, "BPE", StringComparison.OrdinalIgnoreCase);
            if (!bpe && !string.Equals(config.TokenizerJsonModelType, "WordPiece", StringComparison.OrdinalIgnoreCase))
            {
                throw new ModelLoadException(
                    $"The model folder '{modelDir}' has no tokenizer: neither '{vocabTxt}' nor '{vocabJson}' exists"
                    + $" (model_type '{modelType}').", vocabTxt);
            }
        }

        return bpe ? LoadByteLevelBpe(modelDir, config) : LoadWordPiece(modelDir, config);
    }

    private static ITextTokenizer LoadTokenizerJson(TokenizerConfig config) =>
        TokenizerJsonReader.Load(config.TokenizerJsonPath, new TokenizerJsonOptions(
            LowerCase: config.GetBool("do_lower_case"),
            StripAccents: config.GetBool("strip_accents"),
            ChineseChars: config.GetBool("tokenize_chinese_chars"),
            PadToken: config.GetToken("pad_token")?.Content,
            MaskToken: config.GetToken("mask_token")?.Content,
            UnkToken: config.GetToken("unk_token")?.Content));

    private static ITextTokenizer LoadSentencePiece(string modelDir, string modelType, string? file, SentencePieceIdLayout? layout,
        TokenizerConfig config)
    {
        if (file is null)
        {
            throw new ModelLoadException(
                $"The model folder '{modelDir}' has no tokenizer for model_type '{modelType}': looked for tokenizer.json, "
                + string.Join(", ", SentencePieceTokenizers.FileNames) + ".", Path.Combine(modelDir, SentencePieceTokenizers.FileNames[0]));
        }

        if (layout is not { } known)
        {
            throw new ModelLoadException(
                $"'{file}' is a SentencePiece model, but how model_type '{modelType}' numbers its pieces is not known here"
                + " (xlm-roberta, albert and deberta-v2 are); add a tokenizer.json.", file, "model_type");
        }

        if (string.Equals(modelType, "deberta-v2", StringComparison.OrdinalIgnoreCase))
        {
            // DebertaV2Tokenizer lower-cases and splits at punctuation before SentencePiece when these are set; the
            // pipeline here does neither, so the ids would be silently wrong (tokenizer.json spells both out instead).
            foreach (string field in new[] { "do_lower_case", "split_by_punct" })
            {
                if (config.GetBool(field) == true)
                {
                    string path = Path.Combine(modelDir, "tokenizer_config.json");
                    throw new ModelLoadException(
                        $"'{path}' sets {field} true, which the SentencePiece tokenizer here does not apply to '{file}'; add the model's tokenizer.json.", path, field);
                }
            }
        }

        return SentencePieceTokenizers.Load(file, known, config.GetToken("cls_token")?.Content, config.GetToken("sep_token")?.Content,
            config.GetToken("pad_token")?.Content, config.GetToken("unk_token")?.Content, config.GetToken("mask_token")?.Content);
    }

    private static ITextTokenizer LoadWordPiece(string modelDir, TokenizerConfig config)
    {
        string path = Path.Combine(modelDir, "vocab.txt");
        string[] vocab;
        string source = path;
        if (File.Exists(path) || config.TokenizerJsonVocab is null)
        {
            string text = ReadText(path, "vocabulary");
            vocab = text.Split('\n');
            if (vocab.Length > 0 && vocab[^1].Length == 0)
            {
                vocab = vocab[..^1];
            }

            for (int i = 0; i < vocab.Length; i++)
            {
                vocab[i] = vocab[i].TrimEnd('\r');
            }
        }
        else
        {
            source = config.TokenizerJsonPath;
            IReadOnlyDictionary<string, int> byToken = config.TokenizerJsonVocab;
            vocab = new string[byToken.Count == 0 ? 0 : byToken.Values.Max() + 1];
            foreach ((string token, int id) in byToken)
            {
                if (id < 0)
                {
                    throw new ModelLoadException($"'{source}' gives '{token}' the negative id {id}.", source, "model.vocab");
                }

                vocab[id] = token;
            }

            for (int i = 0; i < vocab.Length; i++)
            {
                vocab[i] ??= $"[unused-id-{i}]";
            }
        }

        bool lowerCase = config.GetBool("do_lower_case") ?? true;
        var settings = new WordPieceSettings(
            LowerCase: lowerCase,
            StripAccents: config.GetBool("strip_accents") ?? lowerCase,
            TokenizeChineseChars: config.GetBool("tokenize_chinese_chars") ?? true,
            UnkToken: config.GetToken("unk_token")?.Content ?? "[UNK]",
            ClsToken: config.GetToken("cls_token")?.Content ?? "[CLS]",
            SepToken: config.GetToken("sep_token")?.Content ?? "[SEP]",
            PadToken: config.GetToken("pad_token")?.Content ?? "[PAD]",
            MaskToken: config.GetToken("mask_token")?.Content ?? "[MASK]");
        return WordPieceTextTokenizer.Create(vocab, settings, source);
    }

    private static ITextTokenizer LoadByteLevelBpe(string modelDir, TokenizerConfig config)
    {
        string vocabPath = Path.Combine(modelDir, "vocab.json");
        string mergesPath = Path.Combine(modelDir, "merges.txt");

        IReadOnlyDictionary<string, int> vocab;
        if (File.Exists(vocabPath) || config.TokenizerJsonVocab is null)
        {
            string json = ReadText(vocabPath, "vocabulary");
            try
            {
                vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(json)
                    ?? throw new JsonException("null instead of an object");
            }
            catch (JsonException e)
            {
                throw new ModelLoadException(
                    $"The vocabulary '{vocabPath}' is not a JSON object of token → id: {e.Message}", vocabPath, inner: e);
            }
        }
        else
        {
            vocab = config.TokenizerJsonVocab;
            vocabPath = config.TokenizerJsonPath;
        }

        IReadOnlyList<string> merges;
        if (File.Exists(mergesPath) || config.TokenizerJsonMerges is null)
        {
            merges = ReadText(mergesPath, "merges file").Split('\n')
                .Select(l => l.TrimEnd('\r'))
                .Where(l => l.Trim().Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal))
                .ToArray();
        }
        else
        {
            merges = config.TokenizerJsonMerges;
            mergesPath = config.TokenizerJsonPath;
        }

        TokenizerConfig.Token? mask = config.GetToken("mask_token");
        var settings = new ByteLevelBpeSettings(
            AddPrefixSpace: config.GetBool("add_prefix_space") ?? false,
            BosToken: (config.GetToken("cls_token") ?? config.GetToken("bos_token"))?.Content ?? "<s>",
            EosToken: (config.GetToken("sep_token") ?? config.GetToken("eos_token"))?.Content ?? "</s>",
            UnkToken: config.GetToken("unk_token")?.Content ?? "<unk>",
            PadToken: config.GetToken("pad_token")?.Content ?? "<pad>",
            MaskToken: mask?.Content ?? "<mask>",
            MaskLStrip: mask?.LStrip ?? true);
        return ByteLevelBpeTextTokenizer.Create(vocab, merges, settings, vocabPath, mergesPath);
    }

    private static string ReadText(string path, string what)
    {
        if (!File.Exists(path))
        {
            throw new ModelLoadException($"The {what} file '{path}' does not exist.", path);
        }

        try
        {
            return File.ReadAllText(path, StrictUtf8);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DecoderFallbackException)
        {
            throw new ModelLoadException($"The {what} file '{path}' cannot be read: {e.Message}", path, inner: e);
        }
    }

    /// <summary>tokenizer_config.json, special_tokens_map.json and tokenizer.json, each optional.</summary>
    private sealed class TokenizerConfig
    {
        internal readonly record struct Token(string Content, bool? LStrip);

        private readonly JsonElement? _config;
        private readonly JsonElement? _specialTokensMap;

        public TokenizerConfig(string modelDir)
        {
            _config = ReadJson(Path.Combine(modelDir, "tokenizer_config.json"));
            _specialTokensMap = ReadJson(Path.Combine(modelDir, "special_tokens_map.json"));
            TokenizerJsonPath = Path.Combine(modelDir, "tokenizer.json");
            if (ReadJson(TokenizerJsonPath) is { } tokenizerJson
                && tokenizerJson.TryGetProperty("model", out JsonElement model) && model.ValueKind == JsonValueKind.Object)
            {
                try
                {
                    TokenizerJsonModelType = model.TryGetProperty("type", out JsonElement type) ? type.GetString() : null;
                    if (model.TryGetProperty("vocab", out JsonElement vocab) && vocab.ValueKind == JsonValueKind.Object)
                    {
                        TokenizerJsonVocab = vocab.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
                    }

                    if (model.TryGetProperty("merges", out JsonElement merges) && merges.ValueKind == JsonValueKind.Array)
                    {
                        TokenizerJsonMerges = merges.EnumerateArray().Select(m => m.ValueKind == JsonValueKind.Array
                            ? string.Join(' ', m.EnumerateArray().Select(p => p.GetString()))
                            : m.GetString() ?? "").ToArray();
                    }
                }
                catch (Exception e) when (e is InvalidOperationException or FormatException)
                {
                    throw new ModelLoadException($"'{TokenizerJsonPath}' has an invalid model section: {e.Message}",
                        TokenizerJsonPath, "model", e);
                }
            }
        }

        public string TokenizerJsonPath { get; }
        public string? TokenizerJsonModelType { get; }
        public IReadOnlyDictionary<string, int>? TokenizerJsonVocab { get; }
        public IReadOnlyList<string>? TokenizerJsonMerges { get; }

        public bool? GetBool(string name) =>
            _config is { } c && c.TryGetProperty(name, out JsonElement v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? v.GetBoolean()
                : null;

        /// <summary>A token given as a string or as an AddedToken object ({"content": ..., "lstrip": ...}).</summary>
        public Token? GetToken(string name)
        {
            foreach (JsonElement? source in new[] { _config, _specialTokensMap })
            {
                if (source is not { } s || !s.TryGetProperty(name, out JsonElement v))
                {
                    continue;
                }

                if (v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } text)
                {
                    return new Token(text, null);
                }

                if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out JsonElement content)
                    && content.ValueKind == JsonValueKind.String && content.GetString() is { Length: > 0 } text2)
                {
                    bool? lstrip = v.TryGetProperty("lstrip", out JsonElement l) && l.ValueKind is JsonValueKind.True or JsonValueKind.False
                        ? l.GetBoolean()
                        : null;
                    return new Token(text2, lstrip);
                }
            }

            return null;
        }

        private static JsonElement? ReadJson(string path)
        {
            if (!File.Exists(path))
            {
                return null;
            }

            try
            {
                using JsonDocument doc = JsonDocument.Parse(File.ReadAllBytes(path));
                return doc.RootElement.ValueKind == JsonValueKind.Object
                    ? doc.RootElement.Clone()
                    : throw new ModelLoadException($"'{path}' is not a JSON object.", path);
            }
            catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
            {
                throw new ModelLoadException($"'{path}' cannot be read as JSON: {e.Message}", path, inner: e);
            }
        }
    }
}
