using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>A normalizer of tokenizer.json ("normalizer": {"type": ...}).</summary>
internal interface ITextNormalizer
{
    NormalizedText Normalize(NormalizedText text);
}

/// <summary>
/// BertNormalizer: clean_text (drop NUL, U+FFFD and control chars; whitespace becomes ' '), handle_chinese_chars
/// (a space on each side of a CJK ideograph), strip_accents (NFD, then drop non-spacing marks; when null it
/// follows lowercase), lowercase.
/// </summary>
internal sealed record BertNormalizer(bool CleanText, bool HandleChineseChars, bool StripAccents, bool Lowercase) : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        var output = new List<NChar>(text.Count);
        foreach (NChar c in text.Chars)
        {
            int cp = char.ConvertToUtf32(c.Value, 0);
            if (CleanText)
            {
                if (cp is 0 or 0xFFFD || WordPieceTextTokenizer.IsControl(cp))
                {
                    continue;
                }

                if (WordPieceTextTokenizer.IsWhitespace(cp))
                {
                    output.Add(c with { Value = " " });
                    continue;
                }
            }

            bool chinese = HandleChineseChars && WordPieceTextTokenizer.IsChineseChar(cp);
            if (chinese)
            {
                output.Add(new NChar(" ", c.Start, c.Start));
            }

            string s = c.Value;
            if (StripAccents)
            {
                s = StripAccentsNormalizer.Strip(s.Normalize(NormalizationForm.FormD));
            }

            if (Lowercase)
            {
                s = LowercaseNormalizer.Lower(s);
            }

            NormalizedText.AddCodePoints(output, s, c.Start, c.End);
            if (chinese)
            {
                output.Add(new NChar(" ", c.End, c.End));
            }
        }

        return new NormalizedText(output);
    }
}

/// <summary>Lowercase: Rust's char::to_lowercase (full mapping; U+0130 is the one unconditional multi-char case).</summary>
internal sealed record LowercaseNormalizer : ITextNormalizer
{
    public static string Lower(string s) => s.Replace("\u0130", "i\u0307", StringComparison.Ordinal).ToLowerInvariant();

    public NormalizedText Normalize(NormalizedText text) => text.MapEach(Lower);
}

/// <summary>StripAccents: drops non-spacing marks (meant to follow NFD/NFKD, as in Hugging Face).</summary>
internal sealed record StripAccentsNormalizer : ITextNormalizer
{
    public static string Strip(string s)
    {
        var kept = new StringBuilder(s.Length);
        for (int k = 0; k < s.Length; k += char.IsSurrogatePair(s, k) ? 2 : 1)
        {
            if (CharUnicodeInfo.GetUnicodeCategory(s, k) != UnicodeCategory.NonSpacingMark)
            {
                kept.Append(s, k, char.IsSurrogatePair(s, k) ? 2 : 1);
            }
        }

        return kept.ToString();
    }

    public NormalizedText Normalize(NormalizedText text) => text.MapEach(Strip);
}

/// <summary>
/// NFC, NFD, NFKC, NFKD. Applied per grapheme cluster (a composition never crosses one), so each output code point
/// keeps the span of its cluster; a cluster whose length does not change keeps its code points' own spans.
/// </summary>
internal sealed record UnicodeNormalizer(NormalizationForm Form) : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        (string value, int[] charToIndex) = text.Flatten();
        var output = new List<NChar>(text.Count);
        int position = 0;
        foreach (int length in GraphemeLengths(value))
        {
            int from = charToIndex[position], to = charToIndex[position + length];
            string cluster = value.Substring(position, length);
            string normalized = cluster.IsNormalized(Form) ? cluster : cluster.Normalize(Form);
            if (normalized == cluster)
            {
                output.AddRange(text.Chars.GetRange(from, to - from));
            }
            else
            {
                TokenOffset span = text.Span(from, to);
                NormalizedText.AddCodePoints(output, normalized, span.Start, span.End);
            }

            position += length;
        }

        return new NormalizedText(output);
    }

    private static IEnumerable<int> GraphemeLengths(string s)
    {
        for (int i = 0; i < s.Length;)
        {
            int n = StringInfo.GetNextTextElementLength(s, i);
            yield return n;
            i += n;
        }
    }
}

/// <summary>Strip: removes whitespace at the left and/or right end.</summary>
internal sealed record StripNormalizer(bool Left, bool Right) : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        int from = 0, to = text.Count;
        while (Left && from < to && IsSpace(text.Chars[from]))
        {
            from++;
        }

        while (Right && to > from && IsSpace(text.Chars[to - 1]))
        {
            to--;
        }

        return text.Slice(from, to);
    }

    private static bool IsSpace(NChar c) => char.IsWhiteSpace(c.Value, 0);
}

/// <summary>Prepend: puts a string before a non-empty text.</summary>
internal sealed record PrependNormalizer(string Prefix) : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        if (text.Count == 0)
        {
            return text;
        }

        var output = new List<NChar>(text.Count + Prefix.Length);
        NormalizedText.AddCodePoints(output, Prefix, text.Chars[0].Start, text.Chars[0].Start);
        output.AddRange(text.Chars);
        return new NormalizedText(output);
    }
}

/// <summary>Replace: every match of a string or regex becomes <see cref="Content"/>, spanning what the match spanned.</summary>
internal sealed record ReplaceNormalizer(Regex Pattern, string Content) : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        (string value, int[] charToIndex) = text.Flatten();
        var output = new List<NChar>(text.Count);
        int next = 0;
        foreach (Match m in Pattern.Matches(value))
        {
            if (m.Length == 0)
            {
                continue;
            }

            int from = charToIndex[m.Index], to = charToIndex[m.Index + m.Length];
            output.AddRange(text.Chars.GetRange(next, from - next));
            TokenOffset span = text.Span(from, to);
            NormalizedText.AddCodePoints(output, Content, span.Start, span.End);
            next = to;
        }

        output.AddRange(text.Chars.GetRange(next, text.Count - next));
        return new NormalizedText(output);
    }
}

/// <summary>Precompiled: SentencePiece's compiled normalization rules (see <see cref="PrecompiledCharsMap"/>).</summary>
internal sealed record PrecompiledNormalizer(PrecompiledCharsMap Map) : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text) => Map.Apply(text);
}

/// <summary>Nmt: drops the control chars SentencePiece's NMT rules drop and turns the other separators into spaces.</summary>
internal sealed record NmtNormalizer : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        var output = new List<NChar>(text.Count);
        foreach (NChar c in text.Chars)
        {
            int cp = char.ConvertToUtf32(c.Value, 0);
            if (cp is (>= 0x0001 and <= 0x0008) or 0x000B or (>= 0x000E and <= 0x001F) or 0x007F or 0x008F or 0x009F)
            {
                continue;
            }

            bool space = cp is 0x0009 or 0x000A or 0x000C or 0x000D or 0x1680 or (>= 0x200B and <= 0x200F) or 0x2028 or 0x2029
                or 0x2581 or 0xFEFF or 0xFFFD;
            output.Add(space ? c with { Value = " " } : c);
        }

        return new NormalizedText(output);
    }
}

/// <summary>Sequence: each normalizer in turn.</summary>
internal sealed record SequenceNormalizer(IReadOnlyList<ITextNormalizer> Normalizers) : ITextNormalizer
{
    public NormalizedText Normalize(NormalizedText text)
    {
        foreach (ITextNormalizer n in Normalizers)
        {
            text = n.Normalize(text);
        }

        return text;
    }
}
