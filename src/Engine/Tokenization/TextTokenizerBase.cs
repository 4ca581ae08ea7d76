namespace AttributionFleet.Engine.Tokenization;

/// <summary>A special token as the loader found it: its text, its id, and whether it eats the whitespace before it.</summary>
internal readonly record struct SpecialToken(string Content, int Id, bool LStrip = false);

/// <summary>
/// What both tokenizers share: special tokens written in the text are matched as such (as Hugging Face does for
/// its added tokens, on the raw text and case-sensitively), the plain stretches between them go to
/// <see cref="EncodeSegment"/>, and the result is cut to length and wrapped in the start and end tokens.
/// </summary>
internal abstract class TextTokenizerBase : ITextTokenizer
{
    private readonly SpecialToken[] _inTextSpecials; // longest first, so that a longer token wins at the same place
    private readonly HashSet<int> _specialIds;

    protected TextTokenizerBase(int padId, int unkId, int maskId, int startId, int endId, int vocabSize,
        IEnumerable<SpecialToken> specials)
    {
        PadId = padId;
        UnkId = unkId;
        MaskId = maskId;
        StartId = startId;
        EndId = endId;
        VocabSize = vocabSize;
        _inTextSpecials = specials.Where(s => s.Content.Length > 0)
            .GroupBy(s => s.Content, StringComparer.Ordinal).Select(g => g.First())
            .OrderByDescending(s => s.Content.Length).ToArray();
        _specialIds = [padId, unkId, maskId, startId, endId, .. _inTextSpecials.Select(s => s.Id)];
    }

    public int PadId { get; }
    public int UnkId { get; }
    public int MaskId { get; }
    public int StartId { get; }
    public int EndId { get; }
    public int VocabSize { get; }

    public bool IsSpecial(int id) => _specialIds.Contains(id);

    public abstract string IdToToken(int id);

    /// <summary>
    /// Appends the tokens of <c>text[start..(start+length)]</c>, which holds no special token, with offsets
    /// into <paramref name="text"/>.
    /// </summary>
    protected abstract void EncodeSegment(string text, int start, int length, List<Piece> output);

    protected readonly record struct Piece(int Id, string Token, TokenOffset Offset);

    public TokenizedText Encode(string text, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);

        var pieces = new List<Piece>();
        int segmentStart = 0;
        int i = 0;
        while (i < text.Length)
        {
            SpecialToken? hit = MatchSpecialAt(text, i);
            if (hit is not { } special)
            {
                i++;
                continue;
            }

            int tokenStart = i;
            if (special.LStrip)
            {
                while (tokenStart > segmentStart && char.IsWhiteSpace(text[tokenStart - 1]))
                {
                    tokenStart--;
                }
            }

            if (tokenStart > segmentStart)
            {
                EncodeSegment(text, segmentStart, tokenStart - segmentStart, pieces);
            }

            pieces.Add(new Piece(special.Id, special.Content, new TokenOffset(i, special.Content.Length)));
            i += special.Content.Length;
            segmentStart = i;
        }

        if (text.Length > segmentStart)
        {
            EncodeSegment(text, segmentStart, text.Length - segmentStart, pieces);
        }

        int keep = Math.Min(pieces.Count, maxLength - 2);
        bool truncated = keep < pieces.Count;

        var ids = new int[keep + 2];
        var tokens = new string[keep + 2];
        var offsets = new TokenOffset[keep + 2];
        ids[0] = StartId;
        tokens[0] = IdToToken(StartId);
        for (int k = 0; k < keep; k++)
        {
            ids[k + 1] = pieces[k].Id;
            tokens[k + 1] = pieces[k].Token;
            offsets[k + 1] = pieces[k].Offset;
        }

        ids[keep + 1] = EndId;
        tokens[keep + 1] = IdToToken(EndId);
        return new TokenizedText(text, ids, tokens, offsets, truncated);
    }

    private SpecialToken? MatchSpecialAt(string text, int index)
    {
        foreach (SpecialToken s in _inTextSpecials)
        {
            if (index + s.Content.Length <= text.Length
                && string.CompareOrdinal(text, index, s.Content, 0, s.Content.Length) == 0)
            {
                return s;
            }
        }

        return null;
    }
}
