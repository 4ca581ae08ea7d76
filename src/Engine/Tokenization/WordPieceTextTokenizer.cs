using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace AttributionFleet.Engine.Tokenization;

/// <summary>Settings of the BERT normalizer and pre-tokenizer (Hugging Face names in the comments).</summary>
internal sealed record WordPieceSettings(
    bool LowerCase,                 // do_lower_case / normalizer.lowercase
    bool StripAccents,              // strip_accents, when null: = LowerCase
    bool TokenizeChineseChars,      // tokenize_chinese_chars / handle_chinese_chars
    string UnkToken = "[UNK]",
    string ClsToken = "[CLS]",
    string SepToken = "[SEP]",
    string PadToken = "[PAD]",
    string MaskToken = "[MASK]");

/// <summary>
/// BERT/DistilBERT WordPiece. Hugging Face's BertNormalizer and BertPreTokenizer are done here, char by char, so
/// that every piece keeps its place in the original text; the WordPiece step of each word is
/// <see cref="BertTokenizer"/>'s (Microsoft.ML.Tokenizers).
/// </summary>
/// <remarks>
/// Microsoft.ML.Tokenizers' own basic tokenization differs from Hugging Face's in 2.0.1 (tab and newline are
/// deleted instead of being spaces, symbols and emoji outside <c>\w</c> and <c>\p{P}</c> are dropped, titlecase
/// letters are not lowercased, spacing marks are stripped with the accents), so it is not used.
/// </remarks>
internal sealed class WordPieceTextTokenizer : TextTokenizerBase
{
    private const int MaxInputCharsPerWord = 100; // Hugging Face's default, counted in code points

    private readonly BertTokenizer _wordPiece;
    private readonly string[] _vocab;
    private readonly WordPieceSettings _settings;

    private WordPieceTextTokenizer(BertTokenizer wordPiece, string[] vocab, WordPieceSettings settings,
        int pad, int unk, int mask, int cls, int sep)
        : base(pad, unk, mask, cls, sep, vocab.Length,
            [
                new SpecialToken(settings.PadToken, pad), new SpecialToken(settings.UnkToken, unk),
                new SpecialToken(settings.ClsToken, cls), new SpecialToken(settings.SepToken, sep),
                new SpecialToken(settings.MaskToken, mask),
            ])
    {
        _wordPiece = wordPiece;
        _vocab = vocab;
        _settings = settings;
    }

    /// <param name="vocab">The tokens by id (the lines of vocab.txt).</param>
    /// <param name="sourcePath">The file the vocabulary came from, for messages.</param>
    internal static WordPieceTextTokenizer Create(string[] vocab, WordPieceSettings settings, string sourcePath)
    {
        if (vocab.Length == 0)
        {
            throw new ModelLoadException($"The vocabulary '{sourcePath}' is empty.", sourcePath);
        }

        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < vocab.Length; i++)
        {
            ids[vocab[i]] = i; // a repeated line: the last one wins, as in Hugging Face
        }

        int Require(string token, string field) => ids.TryGetValue(token, out int id)
            ? id
            : throw new ModelLoadException(
                $"The vocabulary '{sourcePath}' has no {field} token '{token}'.", sourcePath, field);

        int unk = Require(settings.UnkToken, "unk_token");
        int cls = Require(settings.ClsToken, "cls_token");
        int sep = Require(settings.SepToken, "sep_token");
        int pad = Require(settings.PadToken, "pad_token");
        int mask = Require(settings.MaskToken, "mask_token");

        BertTokenizer wordPiece;
        try
        {
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', vocab) + "\n"));
            wordPiece = BertTokenizer.Create(stream, new BertOptions
            {
                LowerCaseBeforeTokenization = settings.LowerCase,
                RemoveNonSpacingMarks = settings.StripAccents,
                IndividuallyTokenizeCjk = settings.TokenizeChineseChars,
                UnknownToken = settings.UnkToken,
                ClassificationToken = settings.ClsToken,
                SeparatorToken = settings.SepToken,
                PaddingToken = settings.PadToken,
                MaskingToken = settings.MaskToken,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new ModelLoadException($"The vocabulary '{sourcePath}' cannot be loaded: {e.Message}", sourcePath, inner: e);
        }

        return new WordPieceTextTokenizer(wordPiece, vocab, settings, pad, unk, mask, cls, sep);
    }

    public override string IdToToken(int id) => (uint)id < (uint)_vocab.Length
        ? _vocab[id]
        : throw new ArgumentOutOfRangeException(nameof(id), id, $"Not an id of this vocabulary of {_vocab.Length}.");

    protected override void EncodeSegment(string text, int start, int length, List<Piece> output)
    {
        var word = new StringBuilder();
        var sources = new List<TokenOffset>(); // the original code point behind each char of `word`

        void EndWord()
        {
            if (word.Length > 0)
            {
                EncodeWord(word.ToString(), sources, output);
                word.Clear();
                sources.Clear();
            }
        }

        int end = start + length;
        for (int i = start; i < end;)
        {
            int cpLength = char.IsHighSurrogate(text[i]) && i + 1 < end && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            int cp = cpLength == 2 ? char.ConvertToUtf32(text[i], text[i + 1]) : text[i];
            var source = new TokenOffset(i, cpLength);
            i += cpLength;

            // clean_text: drop NUL, U+FFFD and control/format/unassigned chars; tab, CR and LF are whitespace.
            if (cp is 0 or 0xFFFD || IsControl(cp))
            {
                continue;
            }

            if (IsWhitespace(cp))
            {
                EndWord();
                continue;
            }

            bool chinese = _settings.TokenizeChineseChars && IsChineseChar(cp);
            if (chinese)
            {
                EndWord();
            }

            foreach (string normalized in Normalize(cp))
            {
                int c = char.ConvertToUtf32(normalized, 0);
                if (IsWhitespace(c))
                {
                    EndWord();
                }
                else if (IsPunctuation(c))
                {
                    EndWord();
                    word.Append(normalized);
                    AddSources(sources, source, normalized.Length);
                    EndWord();
                }
                else
                {
                    word.Append(normalized);
                    AddSources(sources, source, normalized.Length);
                }
            }

            if (chinese)
            {
                EndWord();
            }
        }

        EndWord();
    }

    private static void AddSources(List<TokenOffset> sources, TokenOffset source, int count)
    {
        for (int k = 0; k < count; k++)
        {
            sources.Add(source);
        }
    }

    /// <summary>The normalized code points (as strings) of one original code point: strip accents, then lowercase.</summary>
    private IEnumerable<string> Normalize(int cp)
    {
        string s = char.ConvertFromUtf32(cp);
        if (_settings.StripAccents)
        {
            string decomposed = s.Normalize(NormalizationForm.FormD);
            var kept = new StringBuilder(decomposed.Length);
            for (int k = 0; k < decomposed.Length; k += char.IsSurrogatePair(decomposed, k) ? 2 : 1)
            {
                if (CharUnicodeInfo.GetUnicodeCategory(decomposed, k) != UnicodeCategory.NonSpacingMark)
                {
                    kept.Append(decomposed, k, char.IsSurrogatePair(decomposed, k) ? 2 : 1);
                }
            }

            s = kept.ToString();
        }

        if (_settings.LowerCase)
        {
            // Rust's to_lowercase (full mapping); the one unconditional multi-char mapping is U+0130.
            s = s.Replace("\u0130", "i\u0307", StringComparison.Ordinal).ToLowerInvariant();
        }

        for (int k = 0; k < s.Length; k += char.IsSurrogatePair(s, k) ? 2 : 1)
        {
            yield return s.Substring(k, char.IsSurrogatePair(s, k) ? 2 : 1);
        }
    }

    private void EncodeWord(string word, List<TokenOffset> sources, List<Piece> output)
    {
        TokenOffset Span(int from, int to) // [from, to) in `word` -> the original text
        {
            int s = sources[from].Start;
            return new TokenOffset(s, sources[to - 1].End - s);
        }

        int codePoints = word.Length - word.Count(char.IsLowSurrogate);
        if (codePoints > MaxInputCharsPerWord)
        {
            output.Add(new Piece(UnkId, _settings.UnkToken, Span(0, word.Length)));
            return;
        }

        IReadOnlyList<EncodedToken> pieces = _wordPiece.EncodeToTokens(word, out _,
            considerPreTokenization: false, considerNormalization: false);
        foreach (EncodedToken piece in pieces)
        {
            (int from, int count) = piece.Offset.GetOffsetAndLength(word.Length);
            TokenOffset offset = count > 0 ? Span(from, from + count) : Span(0, word.Length);
            output.Add(new Piece(piece.Id, piece.Value, offset));
        }
    }

    // Hugging Face tokenizers (normalizers/bert.rs, pre_tokenizers/bert.rs):

    internal static bool IsWhitespace(int cp) =>
        cp is '\t' or '\n' or '\r' || (cp <= char.MaxValue ? char.IsWhiteSpace((char)cp) : false);

    internal static bool IsControl(int cp)
    {
        if (cp is '\t' or '\n' or '\r')
        {
            return false;
        }

        // Rust's char::is_other: Cc, Cf, Cs, Co, Cn.
        return CharUnicodeInfo.GetUnicodeCategory(cp) is UnicodeCategory.Control or UnicodeCategory.Format
            or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
    }

    internal static bool IsPunctuation(int cp) =>
        cp is (>= 33 and <= 47) or (>= 58 and <= 64) or (>= 91 and <= 96) or (>= 123 and <= 126)
        || CharUnicodeInfo.GetUnicodeCategory(cp) is UnicodeCategory.ConnectorPunctuation
            or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation
            or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    internal static bool IsChineseChar(int cp) =>
        cp is (>= 0x4E00 and <= 0x9FFF) or (>= 0x3400 and <= 0x4DBF) or (>= 0x20000 and <= 0x2A6DF)
            or (>= 0x2A700 and <= 0x2B73F) or (>= 0x2B740 and <= 0x2B81F) or (>= 0x2B920 and <= 0x2CEAF)
            or (>= 0xF900 and <= 0xFAFF) or (>= 0x2F800 and <= 0x2FA1F);
}
