using System.Text.RegularExpressions;

namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>A pre-tokenizer of tokenizer.json: cuts a normalized text into the words the model tokenizes one by one.</summary>
internal interface IPreTokenizer
{
    /// <param name="first">True for the first stretch of the text (before any added token), for Metaspace's prepend_scheme "first".</param>
    IEnumerable<NormalizedText> Split(NormalizedText text, bool first);
}

/// <summary>Hugging Face's SplitDelimiterBehavior: what happens to the matched delimiters.</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

internal static class Splitting
{
    /// <summary>Cuts <paramref name="text"/> at the ranges [from, to) (code point indices, ascending, disjoint).</summary>
    public static IEnumerable<NormalizedText> ByRanges(NormalizedText text, IEnumerable<(int From, int To)> matches,
        SplitBehavior behavior, bool invert = false)
    {
        var parts = new List<(int From, int To, bool Match)>();
        int next = 0;
        foreach ((int from, int to) in matches)
        {
            if (to <= from)
            {
                continue;
            }

            if (from > next)
            {
                parts.Add((next, from, invert));
            }

            parts.Add((from, to, !invert));
            next = to;
        }

        if (next < text.Count)
        {
            parts.Add((next, text.Count, invert));
        }

        var pieces = new List<(int From, int To)>();
        switch (behavior)
        {
            case SplitBehavior.Removed:
                pieces.AddRange(parts.Where(p => !p.Match).Select(p => (p.From, p.To)));
                break;
            case SplitBehavior.Isolated:
                pieces.AddRange(parts.Select(p => (p.From, p.To)));
                break;
            case SplitBehavior.Contiguous:
                bool previousMatched = false;
                foreach (var p in parts)
                {
                    if (p.Match && previousMatched)
                    {
                        pieces[^1] = (pieces[^1].From, p.To);
                    }
                    else
                    {
                        pieces.Add((p.From, p.To));
                    }

                    previousMatched = p.Match;
                }

                break;
            case SplitBehavior.MergedWithPrevious:
                bool previousWasText = false;
                foreach (var p in parts)
                {
                    if (p.Match && previousWasText)
                    {
                        pieces[^1] = (pieces[^1].From, p.To);
                    }
                    else
                    {
                        pieces.Add((p.From, p.To));
                    }

                    previousWasText = !p.Match;
                }

                break;
            case SplitBehavior.MergedWithNext:
                bool previousWasMatch = false;
                foreach (var p in parts)
                {
                    if (!p.Match && previousWasMatch)
                    {
                        pieces[^1] = (pieces[^1].From, p.To);
                    }
                    else
                    {
                        pieces.Add((p.From, p.To));
                    }

                    previousWasMatch = p.Match;
                }

                break;
        }

        return pieces.Where(p => p.To > p.From).Select(p => text.Slice(p.From, p.To));
    }

    /// <summary>The matches of <paramref name="regex"/> as code point ranges.</summary>
    public static IEnumerable<(int From, int To)> Matches(NormalizedText text, Regex regex)
    {
        (string value, int[] charToIndex) = text.Flatten();
        foreach (Match m in regex.Matches(value))
        {
            if (m.Length > 0)
            {
                yield return (charToIndex[m.Index], charToIndex[m.Index + m.Length]);
            }
        }
    }

    /// <summary>Each code point for which <paramref name="test"/> holds, as a range of its own.</summary>
    public static IEnumerable<(int From, int To)> Where(NormalizedText text, Func<string, bool> test)
    {
        for (int i = 0; i < text.Count; i++)
        {
            if (test(text.Chars[i].Value))
            {
                yield return (i, i + 1);
            }
        }
    }

    public static SplitBehavior ParseBehavior(string? name, string source) => name switch
    {
        null or "Isolated" => SplitBehavior.Isolated,
        "Removed" => SplitBehavior.Removed,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new ModelLoadException($"'{source}' has an unknown split behavior '{name}'.", source, "pre_tokenizer.behavior"),
    };
}

/// <summary>BertPreTokenizer: splits on whitespace (removed) and isolates each punctuation char.</summary>
internal sealed record BertPreTokenizer : IPreTokenizer
{
    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first) =>
        Splitting.ByRanges(text, Splitting.Where(text, IsSpace), SplitBehavior.Removed)
            .SelectMany(w => Splitting.ByRanges(w, Splitting.Where(w, c => WordPieceTextTokenizer.IsPunctuation(char.ConvertToUtf32(c, 0))), SplitBehavior.Isolated));

    internal static bool IsSpace(string c) => WordPieceTextTokenizer.IsWhitespace(char.ConvertToUtf32(c, 0));
}

/// <summary>WhitespaceSplit: splits on whitespace, which is removed.</summary>
internal sealed record WhitespaceSplitPreTokenizer : IPreTokenizer
{
    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first) =>
        Splitting.ByRanges(text, Splitting.Where(text, c => char.IsWhiteSpace(c, 0)), SplitBehavior.Removed);
}

/// <summary>Whitespace: the words of <c>\w+|[^\w\s]+</c>.</summary>
internal sealed partial record WhitespacePreTokenizer : IPreTokenizer
{
    [GeneratedRegex(@"\w+|[^\w\s]+")]
    private static partial Regex Words();

    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first) =>
        Splitting.ByRanges(text, Splitting.Matches(text, Words()), SplitBehavior.Removed, invert: true);
}

/// <summary>Punctuation: each punctuation char on its own (or as the behavior says).</summary>
internal sealed record PunctuationPreTokenizer(SplitBehavior Behavior) : IPreTokenizer
{
    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first) =>
        Splitting.ByRanges(text, Splitting.Where(text, c => WordPieceTextTokenizer.IsPunctuation(char.ConvertToUtf32(c, 0))), Behavior);
}

/// <summary>Digits: digits split from the rest, each on its own when individual_digits.</summary>
internal sealed partial record DigitsPreTokenizer(bool Individual) : IPreTokenizer
{
    [GeneratedRegex(@"\p{Nd}+")]
    private static partial Regex DigitRuns();

    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first) => Individual
        ? Splitting.ByRanges(text, Splitting.Where(text, c => char.IsDigit(c, 0)), SplitBehavior.Isolated)
        : Splitting.ByRanges(text, Splitting.Matches(text, DigitRuns()), SplitBehavior.Isolated);
}

/// <summary>Split: by a string or regex pattern, with a delimiter behavior, optionally inverted.</summary>
internal sealed record SplitPreTokenizer(Regex Pattern, SplitBehavior Behavior, bool Invert) : IPreTokenizer
{
    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first) =>
        Splitting.ByRanges(text, Splitting.Matches(text, Pattern), Behavior, Invert);
}

/// <summary>
/// ByteLevel: an optional prefix space, GPT-2's split pattern, then each UTF-8 byte as one of GPT-2's 256
/// printable stand-ins (a space is 'Ġ'). Every byte keeps the span of its code point.
/// </summary>
internal sealed partial record ByteLevelPreTokenizer(bool AddPrefixSpace, bool UseRegex) : IPreTokenizer
{
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2Split();

    /// <summary>GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for U+0100 onwards.</summary>
    public static readonly string[] ByteChars = BuildByteChars();

    private static string[] BuildByteChars()
    {
        var map = new string[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is (>= 33 and <= 126) or (>= 161 and <= 172) or (>= 174 and <= 255);
            map[b] = char.ConvertFromUtf32(printable ? b : next++);
        }

        return map;
    }

    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first)
    {
        if (AddPrefixSpace && text.Count > 0 && text.Chars[0].Value != " ")
        {
            var withSpace = new List<NChar>(text.Count + 1) { new(" ", text.Chars[0].Start, text.Chars[0].Start) };
            withSpace.AddRange(text.Chars);
            text = new NormalizedText(withSpace);
        }

        IEnumerable<NormalizedText> words = UseRegex
            ? Splitting.ByRanges(text, Splitting.Matches(text, Gpt2Split()), SplitBehavior.Isolated)
            : [text];
        return words.Select(ToBytes);
    }

    private static NormalizedText ToBytes(NormalizedText word)
    {
        var chars = new List<NChar>(word.Count);
        foreach (NChar c in word.Chars)
        {
            foreach (byte b in System.Text.Encoding.UTF8.GetBytes(c.Value))
            {
                chars.Add(c with { Value = ByteChars[b] });
            }
        }

        return new NormalizedText(chars);
    }
}

/// <summary>
/// Metaspace: spaces become the replacement ('▁'), which is also put in front (prepend_scheme "always", or
/// "first" for the first stretch only), and the text is cut before each replacement (split: true).
/// </summary>
internal sealed record MetaspacePreTokenizer(string Replacement, string PrependScheme, bool SplitWords) : IPreTokenizer
{
    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first)
    {
        var chars = new List<NChar>(text.Count + 1);
        bool prepend = PrependScheme == "always" || (PrependScheme == "first" && first);
        if (prepend && text.Count > 0 && text.Chars[0].Value != Replacement && text.Chars[0].Value != " ")
        {
            chars.Add(new NChar(Replacement, text.Chars[0].Start, text.Chars[0].Start));
        }

        foreach (NChar c in text.Chars)
        {
            // The replacement stands for the space but covers none of the word: offsets stay on the word itself.
            chars.Add(c.Value == " " ? c with { Value = Replacement, End = c.Start } : c);
        }

        var replaced = new NormalizedText(chars);
        return SplitWords
            ? Splitting.ByRanges(replaced, Splitting.Where(replaced, c => c == Replacement), SplitBehavior.MergedWithNext)
            : [replaced];
    }
}

/// <summary>Sequence: each pre-tokenizer in turn on every piece.</summary>
internal sealed record SequencePreTokenizer(IReadOnlyList<IPreTokenizer> PreTokenizers) : IPreTokenizer
{
    public IEnumerable<NormalizedText> Split(NormalizedText text, bool first)
    {
        IEnumerable<NormalizedText> pieces = [text];
        foreach (IPreTokenizer p in PreTokenizers)
        {
            IPreTokenizer current = p;
            pieces = pieces.SelectMany(w => current.Split(w, first)).ToList();
        }

        return pieces;
    }
}
