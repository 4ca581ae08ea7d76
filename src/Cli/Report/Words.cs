using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Report;

/// <summary>One word of an explained text for display: its pieces (tokens) and the sum of their scores.</summary>
public sealed record Word(string Text, double Score, IReadOnlyList<(string Token, double Score)> Pieces, bool Special, bool SpaceBefore);

/// <summary>
/// The words of <see cref="WordSpans"/> (pieces merged through the character offsets, words as typed) with what the
/// terminal and the HTML report need to lay them out: the pieces' tokens and whether a space came before the word.
/// </summary>
public static class Words
{
    public static IReadOnlyList<Word> Merge(Explanation e) => Merge(e.Text, e.Tokens, e.Scores, e.Offsets.Select(o => (o.Start, o.Length)).ToArray());

    public static IReadOnlyList<Word> Merge(string text, IReadOnlyList<string> tokens, IReadOnlyList<double> scores, IReadOnlyList<(int Start, int Length)>? offsets = null)
    {
        offsets ??= tokens.Select(t => t is "[CLS]" or "[SEP]" or "[PAD]" or "<s>" or "</s>" or "<pad>" ? (0, 0) : (-1, 1)).ToArray();
        var words = new List<Word>();
        int previousEnd = -1;
        foreach (var w in WordSpans.Merge(text, tokens, scores, offsets))
        {
            bool space = w.Special || w.Start < 0 ? words.Count > 0 : previousEnd >= 0 ? w.Start > previousEnd : words.Count > 0;
            if (!w.Special && w.Start >= 0) previousEnd = w.End;
            words.Add(new Word(w.Text, w.Score, w.Pieces.Select(i => (tokens[i], scores[i])).ToList(), w.Special, space));
        }
        return words;
    }
}
