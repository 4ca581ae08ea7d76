namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>
/// An entry of tokenizer.json's "added_tokens": matched in the text before the model sees it, on the raw text
/// (normalized: false) or on the normalized text (normalized: true). lstrip/rstrip take the whitespace on that
/// side; single_word matches only where no word character touches it.
/// </summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool Normalized, bool LStrip = false,
    bool RStrip = false, bool SingleWord = false);

/// <summary>Splits a text into the stretches between added tokens and the added tokens themselves (leftmost, then longest).</summary>
internal sealed class AddedTokenMatcher
{
    private readonly AddedToken[] _tokens; // longest first, so that the longest wins at the same place

    public AddedTokenMatcher(IEnumerable<AddedToken> tokens)
    {
        _tokens = tokens.Where(t => t.Content.Length > 0).OrderByDescending(t => t.Content.Length).ToArray();
    }

    public bool IsEmpty => _tokens.Length == 0;

    /// <summary>The pieces of <paramref name="text"/> in order: a stretch (Token null) or an added token with the code points it took.</summary>
    public List<(NormalizedText Text, AddedToken? Token)> Split(NormalizedText text)
    {
        var result = new List<(NormalizedText, AddedToken?)>();
        if (_tokens.Length == 0 || text.Count == 0)
        {
            result.Add((text, null));
            return result;
        }

        (string value, int[] charToIndex) = text.Flatten();
        int segmentStart = 0; // UTF-16 index in value
        for (int i = 0; i < value.Length;)
        {
            AddedToken? hit = MatchAt(value, i);
            if (hit is null)
            {
                i++;
                continue;
            }

            int from = i, to = i + hit.Content.Length;
            if (hit.LStrip)
            {
                while (from > segmentStart && char.IsWhiteSpace(value[from - 1]))
                {
                    from--;
                }
            }

            if (hit.RStrip)
            {
                while (to < value.Length && char.IsWhiteSpace(value[to]))
                {
                    to++;
                }
            }

            if (from > segmentStart)
            {
                result.Add((text.Slice(charToIndex[segmentStart], charToIndex[from]), null));
            }

            result.Add((text.Slice(charToIndex[i], charToIndex[i + hit.Content.Length]), hit));
            i = to;
            segmentStart = to;
        }

        if (segmentStart < value.Length)
        {
            result.Add((text.Slice(charToIndex[segmentStart], text.Count), null));
        }

        return result;
    }

    private AddedToken? MatchAt(string value, int index)
    {
        foreach (AddedToken t in _tokens)
        {
            if (index + t.Content.Length > value.Length
                || string.CompareOrdinal(value, index, t.Content, 0, t.Content.Length) != 0)
            {
                continue;
            }

            if (t.SingleWord
                && ((index > 0 && IsWordChar(value[index - 1])) || (index + t.Content.Length < value.Length && IsWordChar(value[index + t.Content.Length]))))
            {
                continue;
            }

            return t;
        }

        return null;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
}
