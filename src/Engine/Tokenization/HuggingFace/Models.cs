namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>One token a model made of a word: its id, its string, and the code points [From, To) of the word it covers.</summary>
internal readonly record struct ModelToken(int Id, string Value, int From, int To);

/// <summary>The "model" of tokenizer.json: turns one pre-tokenized word into tokens.</summary>
internal interface ITokenModel
{
    void Tokenize(NormalizedText word, List<ModelToken> output);

    /// <summary>token → id of the model's own vocabulary.</summary>
    IReadOnlyDictionary<string, int> Vocab { get; }

    /// <summary>The unknown token's id, or null when the model has none.</summary>
    int? UnkId { get; }
}

/// <summary>
/// WordPiece: greedy longest match first; pieces after the first carry continuing_subword_prefix ("##"); a word
/// with a part not in the vocabulary, or longer than max_input_chars_per_word code points, is one unknown token.
/// </summary>
internal sealed class WordPieceModel(Dictionary<string, int> vocab, string unkToken, string prefix, int maxChars, string source) : ITokenModel
{
    private readonly int _unk = vocab.TryGetValue(unkToken, out int id)
        ? id
        : throw new ModelLoadException($"'{source}': the WordPiece vocabulary has no unk_token '{unkToken}'.", source, "model.unk_token");

    public IReadOnlyDictionary<string, int> Vocab => vocab;

    public int? UnkId => _unk;

    public void Tokenize(NormalizedText word, List<ModelToken> output)
    {
        int n = word.Count;
        if (n > maxChars)
        {
            output.Add(new ModelToken(_unk, unkToken, 0, n));
            return;
        }

        (string value, int[] charToIndex) = word.Flatten();
        var charStart = new int[n + 1]; // UTF-16 index where code point i starts
        for (int k = value.Length - 1; k >= 0; k--)
        {
            charStart[charToIndex[k]] = k;
        }

        charStart[n] = value.Length;
        var pieces = new List<ModelToken>();
        for (int start = 0; start < n;)
        {
            ModelToken? found = null;
            for (int end = n; end > start; end--)
            {
                string piece = value.Substring(charStart[start], charStart[end] - charStart[start]);
                if (start > 0)
                {
                    piece = prefix + piece;
                }

                if (vocab.TryGetValue(piece, out int pieceId))
                {
                    found = new ModelToken(pieceId, piece, start, end);
                    break;
                }
            }

            if (found is not { } f)
            {
                output.Add(new ModelToken(_unk, unkToken, 0, n));
                return;
            }

            pieces.Add(f);
            start = f.To;
        }

        output.AddRange(pieces);
    }
}

/// <summary>
/// BPE: the word's code points (with continuing_subword_prefix / end_of_word_suffix) are merged pairwise, lowest
/// merge rank first, until no ranked pair is left. A symbol not in the vocabulary becomes its bytes as
/// &lt;0xXX&gt; tokens (byte_fallback) or the unknown token (consecutive ones fused when fuse_unk).
/// </summary>
internal sealed class BpeModel : ITokenModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly string? _unkToken;
    private readonly string _prefix;
    private readonly string _suffix;
    private readonly bool _fuseUnk;
    private readonly bool _byteFallback;
    private readonly bool _ignoreMerges;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string A, string B)> merges, string? unkToken,
        string? prefix, string? suffix, bool fuseUnk, bool byteFallback, bool ignoreMerges, string source)
    {
        _vocab = vocab;
        _ranks = new Dictionary<(string, string), int>();
        for (int i = 0; i < merges.Count; i++)
        {
            _ranks.TryAdd(merges[i], i);
        }

        _unkToken = unkToken;
        _prefix = prefix ?? "";
        _suffix = suffix ?? "";
        _fuseUnk = fuseUnk;
        _byteFallback = byteFallback;
        _ignoreMerges = ignoreMerges;
        if (unkToken is not null && !vocab.ContainsKey(unkToken))
        {
            throw new ModelLoadException($"'{source}': the BPE vocabulary has no unk_token '{unkToken}'.", source, "model.unk_token");
        }
    }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public int? UnkId => _unkToken is null ? null : _vocab[_unkToken];

    public void Tokenize(NormalizedText word, List<ModelToken> output)
    {
        int n = word.Count;
        if (n == 0)
        {
            return;
        }

        if (_ignoreMerges && _vocab.TryGetValue(word.ToString(), out int whole))
        {
            output.Add(new ModelToken(whole, word.ToString(), 0, n));
            return;
        }

        var symbols = new List<(string Value, int From, int To)>(n);
        for (int i = 0; i < n; i++)
        {
            string s = word.Chars[i].Value;
            if (i > 0)
            {
                s = _prefix + s;
            }

            if (i == n - 1)
            {
                s += _suffix;
            }

            symbols.Add((s, i, i + 1));
        }

        while (symbols.Count > 1)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (_ranks.TryGetValue((symbols[i].Value, symbols[i + 1].Value), out int rank) && rank < bestRank)
                {
                    best = i;
                    bestRank = rank;
                }
            }

            if (best < 0)
            {
                break;
            }

            // The merged symbol drops the continuing prefix of its second part, as Hugging Face's merges are written.
            string right = symbols[best + 1].Value;
            if (_prefix.Length > 0 && right.StartsWith(_prefix, StringComparison.Ordinal))
            {
                right = right[_prefix.Length..];
            }

            symbols[best] = (symbols[best].Value + right, symbols[best].From, symbols[best + 1].To);
            symbols.RemoveAt(best + 1);
        }

        bool previousUnk = false;
        foreach ((string value, int from, int to) in symbols)
        {
            if (_vocab.TryGetValue(value, out int id))
            {
                output.Add(new ModelToken(id, value, from, to));
                previousUnk = false;
                continue;
            }

            if (_byteFallback)
            {
                byte[] bytes = System.Text.Encoding.UTF8.GetBytes(string.Concat(word.Chars.GetRange(from, to - from).Select(c => c.Value)));
                string[] byteTokens = bytes.Select(b => $"<0x{b:X2}>").ToArray();
                if (byteTokens.All(_vocab.ContainsKey))
                {
                    output.AddRange(byteTokens.Select(t => new ModelToken(_vocab[t], t, from, to)));
                    previousUnk = false;
                    continue;
                }
            }

            if (_unkToken is null)
            {
                throw new ModelLoadException($"The BPE vocabulary has no token for '{value}' and no unk_token.", "tokenizer.json", "model.unk_token");
            }

            if (_fuseUnk && previousUnk)
            {
                output[^1] = output[^1] with { To = to };
            }
            else
            {
                output.Add(new ModelToken(_vocab[_unkToken], _unkToken, from, to));
            }

            previousUnk = true;
        }
    }
}

/// <summary>
/// Unigram (SentencePiece): the segmentation of the word with the highest total log-probability (Viterbi over
/// the pieces' scores). A code point no piece covers is the unknown token, scored min_score − 10 as in
/// SentencePiece and Hugging Face; consecutive unknowns are fused into one.
/// </summary>
internal sealed class UnigramModel : ITokenModel
{
    private const double UnkPenalty = 10.0;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, (int Id, double Score)> _pieces; // the pieces a segmentation may use
    private readonly string[] _idToPiece;
    private readonly int _maxPieceLength; // in UTF-16 chars
    private readonly int _unkId;
    private readonly double _unkScore;
    private readonly bool _byteFallback;

    /// <param name="pieces">(piece, score) by id.</param>
    /// <param name="usable">Which ids may appear in a segmentation (SentencePiece leaves out control and unused pieces).</param>
    public UnigramModel(IReadOnlyList<(string Piece, double Score)> pieces, int unkId, bool byteFallback, Func<int, bool> usable, string source)
    {
        if ((uint)unkId >= (uint)pieces.Count)
        {
            throw new ModelLoadException($"'{source}': the Unigram unk_id {unkId} is not an id of its {pieces.Count} pieces.", source, "model.unk_id");
        }

        _vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        _pieces = new Dictionary<string, (int, double)>(StringComparer.Ordinal);
        _idToPiece = new string[pieces.Count];
        double minScore = double.MaxValue;
        for (int id = 0; id < pieces.Count; id++)
        {
            (string piece, double score) = pieces[id];
            _idToPiece[id] = piece;
            _vocab.TryAdd(piece, id);
            minScore = Math.Min(minScore, score);
            if (id != unkId && usable(id) && piece.Length > 0)
            {
                _pieces.TryAdd(piece, (id, score));
                _maxPieceLength = Math.Max(_maxPieceLength, piece.Length);
            }
        }

        _unkId = unkId;
        _unkScore = minScore - UnkPenalty;
        _byteFallback = byteFallback;
    }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public int? UnkId => _unkId;

    public void Tokenize(NormalizedText word, List<ModelToken> output)
    {
        (string value, int[] charToIndex) = word.Flatten();
        int n = value.Length;
        if (n == 0)
        {
            return;
        }

        // best[i]: the best score of value[..i]; from[i]/id[i]: the last piece of that segmentation.
        var best = new double[n + 1];
        var from = new int[n + 1];
        var ids = new int[n + 1];
        Array.Fill(best, double.NegativeInfinity);
        best[0] = 0;
        for (int start = 0; start < n; start++)
        {
            if (double.IsNegativeInfinity(best[start]) || (start > 0 && char.IsLowSurrogate(value[start])))
            {
                continue;
            }

            bool covered = false;
            int cpLength = char.IsSurrogatePair(value, start) ? 2 : 1;
            for (int length = 1; length <= _maxPieceLength && start + length <= n; length++)
            {
                if (start + length < n && char.IsLowSurrogate(value[start + length]))
                {
                    continue; // never end inside a code point
                }

                if (_pieces.TryGetValue(value.Substring(start, length), out var piece))
                {
                    if (length == cpLength)
                    {
                        covered = true;
                    }

                    double score = best[start] + piece.Score;
                    if (score > best[start + length])
                    {
                        best[start + length] = score;
                        from[start + length] = start;
                        ids[start + length] = piece.Id;
                    }
                }
            }

            if (!covered)
            {
                double score = best[start] + _unkScore;
                if (score > best[start + cpLength])
                {
                    best[start + cpLength] = score;
                    from[start + cpLength] = start;
                    ids[start + cpLength] = -1; // unknown
                }
            }
        }

        var tokens = new List<ModelToken>();
        for (int end = n; end > 0; end = from[end])
        {
            int start = from[end];
            tokens.Add(new ModelToken(ids[end], value[start..end], charToIndex[start], charToIndex[end]));
        }

        tokens.Reverse();
        int firstOutput = output.Count;
        bool previousUnk = false;
        foreach (ModelToken t in tokens)
        {
            if (t.Id >= 0)
            {
                output.Add(t);
                previousUnk = false;
                continue;
            }

            if (_byteFallback)
            {
                string[] byteTokens = System.Text.Encoding.UTF8.GetBytes(t.Value).Select(b => $"<0x{b:X2}>").ToArray();
                if (byteTokens.All(_vocab.ContainsKey))
                {
                    output.AddRange(byteTokens.Select(b => new ModelToken(_vocab[b], b, t.From, t.To)));
                    previousUnk = false;
                    continue;
                }
            }

            if (previousUnk)
            {
                output[^1] = output[^1] with { To = t.To, Value = output[^1].Value + t.Value };
            }
            else
            {
                output.Add(t with { Id = _unkId });
            }

            previousUnk = true;
        }

        for (int k = firstOutput; k < output.Count; k++)
        {
            if (output[k].Id == _unkId)
            {
                output[k] = output[k] with { Value = _idToPiece[_unkId] };
            }
        }
    }
}
