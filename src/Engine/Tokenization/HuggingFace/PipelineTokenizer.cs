namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>
/// What the post-processor puts around the content: the special tokens before and after (from tokenizer.json's
/// TemplateProcessing, BertProcessing or RobertaProcessing), and whether byte-level offsets are trimmed of the
/// whitespace their tokens carry (trim_offsets).
/// </summary>
internal sealed record PostProcessing(IReadOnlyList<(int Id, string Token)> Prefix, IReadOnlyList<(int Id, string Token)> Suffix, bool TrimOffsets);

/// <summary>The parts of a Hugging Face tokenizer, as tokenizer.json (or a SentencePiece model) describes them.</summary>
internal sealed record TokenizerPipeline(
    string Source,
    ITextNormalizer? Normalizer,
    IPreTokenizer? PreTokenizer,
    ITokenModel Model,
    IReadOnlyList<AddedToken> AddedTokens,
    PostProcessing Post,
    int PadId,
    int UnkId,
    int MaskId,
    IReadOnlyDictionary<int, string>? IdToTokenOverride = null);

/// <summary>
/// Hugging Face's encode, step by step: added tokens on the raw text, the normalizer, added tokens on the
/// normalized text, the pre-tokenizer, the model, then the post-processor's special tokens. Every token keeps
/// the span of the original text it came from.
/// </summary>
internal sealed class PipelineTokenizer : ITextTokenizer
{
    private readonly TokenizerPipeline _p;
    private readonly AddedTokenMatcher _rawMatcher;
    private readonly AddedTokenMatcher _normalizedMatcher;
    private readonly Dictionary<int, string> _idToToken = new();
    private readonly HashSet<int> _specialIds;

    public PipelineTokenizer(TokenizerPipeline pipeline)
    {
        _p = pipeline;
        _rawMatcher = new AddedTokenMatcher(pipeline.AddedTokens.Where(t => !t.Normalized || pipeline.Normalizer is null));
        _normalizedMatcher = new AddedTokenMatcher(pipeline.AddedTokens.Where(t => t.Normalized && pipeline.Normalizer is not null));
        foreach ((string token, int id) in pipeline.Model.Vocab)
        {
            _idToToken.TryAdd(id, token);
        }

        foreach (AddedToken t in pipeline.AddedTokens)
        {
            _idToToken[t.Id] = t.Content;
        }

        if (pipeline.IdToTokenOverride is { } overrides)
        {
            foreach ((int id, string token) in overrides)
            {
                _idToToken[id] = token;
            }
        }

        if (pipeline.Post.Prefix.Count != 1 || pipeline.Post.Suffix.Count != 1)
        {
            throw new ModelLoadException(
                $"'{pipeline.Source}': the post_processor puts {pipeline.Post.Prefix.Count} token(s) before and {pipeline.Post.Suffix.Count} after the text;"
                + " only one start token and one end token (as [CLS] $A [SEP] or <s> $A </s>) are supported.", pipeline.Source, "post_processor");
        }

        StartId = pipeline.Post.Prefix[0].Id;
        EndId = pipeline.Post.Suffix[0].Id;
        foreach ((int id, string token) in pipeline.Post.Prefix.Concat(pipeline.Post.Suffix))
        {
            _idToToken.TryAdd(id, token);
        }

        _specialIds = [PadId, UnkId, MaskId, StartId, EndId, .. pipeline.AddedTokens.Where(t => t.Special).Select(t => t.Id)];
        VocabSize = _idToToken.Keys.Max() + 1;
    }

    public int PadId => _p.PadId;
    public int UnkId => _p.UnkId;
    public int MaskId => _p.MaskId;
    public int StartId { get; }
    public int EndId { get; }
    public int VocabSize { get; }

    public bool IsSpecial(int id) => _specialIds.Contains(id);

    public string IdToToken(int id) => _idToToken.TryGetValue(id, out string? token)
        ? token
        : throw new ArgumentOutOfRangeException(nameof(id), id, "Not an id of this vocabulary.");

    public TokenizedText Encode(string text, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);

        var pieces = new List<(int Id, string Token, TokenOffset Offset)>();
        bool first = true;
        foreach ((NormalizedText raw, AddedToken? added) in _rawMatcher.Split(NormalizedText.FromOriginal(text, 0, text.Length)))
        {
            if (added is not null)
            {
                pieces.Add((added.Id, added.Content, raw.Span(0, raw.Count)));
                first = false;
                continue;
            }

            NormalizedText normalized = _p.Normalizer?.Normalize(raw) ?? raw;
            foreach ((NormalizedText stretch, AddedToken? addedNormalized) in _normalizedMatcher.Split(normalized))
            {
                if (addedNormalized is not null)
                {
                    pieces.Add((addedNormalized.Id, addedNormalized.Content, stretch.Span(0, stretch.Count)));
                }
                else
                {
                    EncodeStretch(text, stretch, first, pieces);
                }

                first = false;
            }
        }

        int keep = Math.Min(pieces.Count, maxLength - 2);
        bool truncated = keep < pieces.Count;
        var ids = new int[keep + 2];
        var tokens = new string[keep + 2];
        var offsets = new TokenOffset[keep + 2];
        (ids[0], tokens[0]) = _p.Post.Prefix[0];
        for (int k = 0; k < keep; k++)
        {
            (ids[k + 1], tokens[k + 1], offsets[k + 1]) = pieces[k];
        }

        (ids[keep + 1], tokens[keep + 1]) = _p.Post.Suffix[0];
        return new TokenizedText(text, ids, tokens, offsets, truncated);
    }

    private void EncodeStretch(string text, NormalizedText stretch, bool first, List<(int, string, TokenOffset)> pieces)
    {
        IEnumerable<NormalizedText> words = _p.PreTokenizer?.Split(stretch, first) ?? [stretch];
        var modelTokens = new List<ModelToken>();
        foreach (NormalizedText word in words)
        {
            modelTokens.Clear();
            _p.Model.Tokenize(word, modelTokens);
            foreach (ModelToken t in modelTokens)
            {
                TokenOffset offset = word.Span(t.From, t.To);
                if (_p.Post.TrimOffsets)
                {
                    offset = Trim(text, offset);
                }

                pieces.Add((t.Id, t.Value, offset));
            }
        }
    }

    /// <summary>trim_offsets: the span without the whitespace at its ends, unless it is all whitespace.</summary>
    private static TokenOffset Trim(string text, TokenOffset offset)
    {
        int from = offset.Start, to = offset.End;
        while (from < to && char.IsWhiteSpace(text[from]))
        {
            from++;
        }

        while (to > from && char.IsWhiteSpace(text[to - 1]))
        {
            to--;
        }

        return from < to ? new TokenOffset(from, to - from) : offset;
    }
}
