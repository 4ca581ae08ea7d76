using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Report;

/// <summary>One word of an explained text: its pieces (tokens) and the sum of their scores.</summary>
public sealed record Word(string Text, double Score, IReadOnlyList<(string Token, double Score)> Pieces, bool Special, bool SpaceBefore);

/// <summary>
/// Merges word pieces back into words: WordPiece continuations start with "##"; in byte-level BPE a piece that does
/// not start with "Ġ" (the encoded space) continues the word before it. A word's score is the sum of its pieces'
/// scores (attributions add up). The word's text is taken from the original text through the token offsets when
/// they are usable, so case and accents survive lower-casing tokenizers. Special tokens stay words of their own.
/// </summary>
public static class Words
{
    public static IReadOnlyList<Word> Merge(Explanation e) => Merge(e.Text, e.Tokens, e.Scores, e.Offsets.Select(o => (o.Start, o.Length)).ToArray());

    public static IReadOnlyList<Word> Merge(string text, IReadOnlyList<string> tokens, IReadOnlyList<double> scores, IReadOnlyList<(int Start, int Length)>? offsets = null)
    {
        bool bpe = tokens.Count > 0 && (tokens[0] == "<s>" || tokens.Any(t => t.StartsWith('Ġ')));
        var groups = new List<(List<int> Indices, bool Special)>();
        for (int i = 0; i < tokens.Count; i++)
        {
            bool special = IsSpecial(tokens[i], offsets is null ? null : offsets[i]);
            var last = groups.Count > 0 ? groups[^1] : default;
            bool continues = !special && groups.Count > 0 && !last.Special &&
                (tokens[i].StartsWith("##", StringComparison.Ordinal) && tokens[i].Length > 2 || bpe && !tokens[i].StartsWith('Ġ'));
            if (continues) last.Indices.Add(i);
            else groups.Add((new List<int> { i }, special));
        }
        var words = new List<Word>(groups.Count);
        int previousEnd = -1;
        foreach (var (indices, special) in groups)
        {
            var pieces = indices.Select(i => (tokens[i], scores[i])).ToList();
            double score = 0;
            foreach (var i in indices) score += scores[i];
            string? fromText = null;
            bool space = words.Count > 0;
            if (!special && offsets is not null)
            {
                int start = offsets[indices[0]].Start, end = offsets[indices[^1]].Start + offsets[indices[^1]].Length;
                if (start >= 0 && end > start && end <= text.Length && !char.IsLowSurrogate(text[start]) && !(end < text.Length && char.IsLowSurrogate(text[end])))
                {
                    fromText = text[start..end];
                    space = previousEnd >= 0 ? start > previousEnd : words.Count > 0;
                    previousEnd = end;
                }
            }
            var display = fromText ?? string.Concat(indices.Select((i, k) => Strip(tokens[i], k == 0)));
            words.Add(new Word(display, score, pieces, special, space));
        }
        return words;
    }

    private static bool IsSpecial(string token, (int Start, int Length)? offset) =>
        offset is { Length: 0 } || token is "[CLS]" or "[SEP]" or "[PAD]" or "<s>" or "</s>" or "<pad>";

    private static string Strip(string token, bool first)
    {
        if (token.StartsWith("##", StringComparison.Ordinal) && token.Length > 2) return token[2..];
        if (token.StartsWith('Ġ')) return first ? token[1..] : " " + token[1..];
        return token;
    }
}
