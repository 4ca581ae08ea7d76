namespace AttributionFleet.Engine.Text;

/// <summary>
/// One word of the original text as typed: its characters <c>Text[Start..End)</c>, the indices of the tokens (pieces)
/// it is made of, and the plain sum of their scores (no normalisation, so the words' scores add up to the tokens').
/// A special token ([CLS], &lt;s&gt; …: no characters) is a word of its own with <see cref="Special"/> set.
/// </summary>
public sealed record TextWord(string Text, int Start, int End, double Score, IReadOnlyList<int> Pieces, bool Special);

/// <summary>
/// Merges pieces back into the words of the original text through the tokenizer's character offsets: pieces whose
/// spans touch (no character between them) and join within a word (letters, digits, an apostrophe or hyphen between
/// them) form one word, so "don't" (don ' t) and "re-watching" (re - watching) stay whole, whichever tokenizer split
/// them, while a full stop or comma after a word stays a word of its own. Leading whitespace inside a piece's span (byte-level BPE's "Ġ") is not part
/// of the word. Used by the terminal, the HTML report and the JSON <c>words</c> field alike.
/// </summary>
public static class WordSpans
{
    private static readonly HashSet<string> SpecialTokens = new() { "[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>" };

    public static IReadOnlyList<TextWord> Merge(Explanation e) =>
        Merge(e.Text, e.Tokens, e.Scores, e.Offsets.Select(o => (o.Start, o.Length)).ToArray());

    public static IReadOnlyList<TextWord> Merge(string text, IReadOnlyList<string> tokens, IReadOnlyList<double> scores, IReadOnlyList<(int Start, int Length)> offsets)
    {
        if (tokens.Count != scores.Count || tokens.Count != offsets.Count)
            throw new ArgumentException($"tokens ({tokens.Count}), scores ({scores.Count}) and offsets ({offsets.Count}) differ in length");
        if (Enumerable.Range(0, tokens.Count).Any(i => !IsSpecial(tokens[i], offsets[i]) && (offsets[i].Start < 0 || offsets[i].Start + offsets[i].Length > text.Length)))
            return ByMarkers(tokens, scores, offsets);
        var words = new List<TextWord>();
        List<int>? pieces = null;
        int start = 0, end = 0;
        void Flush()
        {
            if (pieces is null) return;
            double score = 0;
            foreach (var i in pieces) score += scores[i];
            words.Add(new TextWord(text[start..end], start, end, score, pieces, false));
            pieces = null;
        }
        for (int i = 0; i < tokens.Count; i++)
        {
            var (s, length) = offsets[i];
            int e = s + length;
            if (IsSpecial(tokens[i], offsets[i]))
            {
                Flush();
                int at = Math.Clamp(s, 0, text.Length);
                words.Add(new TextWord(tokens[i], at, at, scores[i], new[] { i }, true));
                continue;
            }
            while (s < e && char.IsWhiteSpace(text[s])) s++;
            if (s == e) s = offsets[i].Start; // a piece of whitespace only keeps its span
            if (pieces is not null && (s < end || s == end && Joins(text, start, end, s)))
            {
                pieces.Add(i);
                end = Math.Max(end, e);
                continue;
            }
            Flush();
            pieces = new List<int> { i };
            (start, end) = (s, e);
        }
        Flush();
        return words;
    }

    /// <summary>
    /// Whether a piece starting at <paramref name="next"/> continues the word <c>text[start..end)</c> it touches: letters
    /// and digits on both sides ("un" + "believably"), or an apostrophe or hyphen between letters or digits ("don" + "'"
    /// + "t", "re" + "-" + "watching"). Other punctuation ("wonderful" + ".", "it" + ",") is a word of its own.
    /// </summary>
    private static bool Joins(string text, int start, int end, int next)
    {
        char before = text[end - 1], after = text[next];
        if (IsWordChar(before) && IsWordChar(after)) return true;
        if (IsJoiner(after)) return IsWordChar(before) && next + 1 < text.Length && IsWordChar(text[next + 1]);
        if (IsJoiner(before)) return end - 2 >= start && IsWordChar(text[end - 2]) && IsWordChar(after);
        return false;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || char.IsSurrogate(c) || char.GetUnicodeCategory(c) is
        System.Globalization.UnicodeCategory.NonSpacingMark or System.Globalization.UnicodeCategory.SpacingCombiningMark;

    private static bool IsJoiner(char c) => c is '\'' or '\u2019' or '-' or '\u2010' or '\u2011';

    private static bool IsSpecial(string token, (int Start, int Length) offset) => offset.Length <= 0 || SpecialTokens.Contains(token);

    /// <summary>
    /// Without usable offsets (a tokenizer that gives none): WordPiece continuations start with "##"; in byte-level BPE
    /// a piece that does not start with "Ġ" continues the word before it. The text is the pieces' (Start = End = -1).
    /// </summary>
    private static IReadOnlyList<TextWord> ByMarkers(IReadOnlyList<string> tokens, IReadOnlyList<double> scores, IReadOnlyList<(int Start, int Length)> offsets)
    {
        bool bpe = tokens.Count > 0 && (tokens[0] == "<s>" || tokens.Any(t => t.StartsWith('Ġ')));
        var groups = new List<(List<int> Indices, bool Special)>();
        for (int i = 0; i < tokens.Count; i++)
        {
            bool special = IsSpecial(tokens[i], offsets[i]);
            bool continues = !special && groups.Count > 0 && !groups[^1].Special &&
                (tokens[i].StartsWith("##", StringComparison.Ordinal) && tokens[i].Length > 2 || bpe && !tokens[i].StartsWith('Ġ'));
            if (continues) groups[^1].Indices.Add(i);
            else groups.Add((new List<int> { i }, special));
        }
        return groups.Select(g =>
        {
            double score = 0;
            foreach (var i in g.Indices) score += scores[i];
            var text = g.Special ? tokens[g.Indices[0]] : string.Concat(g.Indices.Select(i => Strip(tokens[i])));
            return new TextWord(text, -1, -1, score, g.Indices, g.Special);
        }).ToList();
    }

    private static string Strip(string token) =>
        token.StartsWith("##", StringComparison.Ordinal) && token.Length > 2 ? token[2..] : token.StartsWith('Ġ') ? token[1..] : token;
}
