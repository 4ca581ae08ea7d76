namespace AttributionFleet.Engine.Text;

/// <summary>
/// What a DeepLift pass over a padded batch costs, in "token rows" (one text row of one token through the network):
/// <code>
/// cost(bucket) = (n + ρ · new_lengths + pass_overhead + group_overhead · (lengths − 1)) · W · (1 + W / (6 H))
/// </code>
/// n texts padded to width W (the padding is the waste), one reference row per distinct length not already recorded
/// by the previous batch (ρ: recording a reference tape in a pass of the references alone), and a fixed per-pass
/// overhead in rows (kernel launches, and each group's reference work in every rule; large on an accelerator, where a pass is
/// launch-bound). The factor <c>1 + W/(6H)</c> is the
/// attention's share: per token a layer does ~24 H² multiply-adds in its linear maps and ~4 W H in attention.
/// <para>
/// With <see cref="PackedTokens"/> (a model that runs its position-wise layers on the real tokens of a batch of several
/// lengths, <see cref="Ops.TokenPacking"/>), the n texts' part is their own tokens T, attention at the width, and a small
/// share π of a token for each padded position (the packing's copies and the padded rows of the attention's operands):
/// <code>
/// texts(bucket) = T + π · (n W − T) + n W² / (6 H)
/// </code>
/// </para>
/// </summary>
public sealed record BucketCostModel
{
    /// <summary>Cost of one reference row relative to one text row.</summary>
    public double ReferenceRow { get; init; } = 1.0;

    /// <summary>Fixed cost of a pass, in text rows of its width.</summary>
    public double PassOverheadRows { get; init; } = 0.5;

    /// <summary>Cost of each length group after the first, in text rows (each reads or adds its own reference in every rule).</summary>
    public double GroupOverheadRows { get; init; }

    /// <summary>Hidden size of the model (the attention term); 768 unless told.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary>The model packs its position-wise layers in a batch of several lengths (see the summary).</summary>
    public bool PackedTokens { get; init; }

    /// <summary>π: a padded position's cost when packed, beyond its attention, relative to a real token.</summary>
    public double PackedPaddingShare { get; init; } = 0.05;

    /// <summary>
    /// Texts of a width one pass holds under the pass memory budget (<see cref="Attribution.DeepLift.TextsPerPass(Models.ITextModel, long, Attribution.MethodOptions, long?, TorchSharp.DeviceType)"/>),
    /// or null: any batch is one pass. A batch the budget splits pays its pass overhead once per pass (float64 bert-base
    /// at 128 tokens: 4 texts a pass under 1 GiB).
    /// </summary>
    public Func<int, long>? TextsPerPass { get; init; }

    /// <summary>Passes a batch of <paramref name="texts"/> at <paramref name="width"/> runs in.</summary>
    public long Passes(int texts, int width)
    {
        if (TextsPerPass is null) return 1;
        long per = Math.Max(1, TextsPerPass(width));
        return Math.Max(1, (texts + per - 1) / per);
    }

    /// <summary>CPU: a pass costs about one and a half text rows by itself, a reference row about half of one.</summary>
    /// <remarks>
    /// Calibrated with <c>fleet bench job --repeats 6</c> (bert-base, 12 layers, 2 threads, 33-text log-normal jobs of
    /// seeds 1–3, warm, paired against the same tokens at the mean length), once a length in a pass cost little more
    /// than its rows (the fused loops reading each tape where it is, LayerNorm's reference half kept in the tape). Pass
    /// 1.5 rows: 1.128–1.142× / 1.152× / 1.165–1.174× the fixed-length figure (seeds 1 / 2 / 3, 5–6 batches); 2.5 rows:
    /// 1.094–1.125× / 1.167× / 1.210–1.211×; 1.0 rows: 1.136× / 1.172× / 1.214× (6–7 batches). 1.5 has the best worst
    /// case. (Before those changes each length cost its reference rows in every rule, and 2.5 won: fewer, fuller passes.)
    /// A reference row, recorded by a pass of the references alone (no multipliers, no backward), costs about half a
    /// text row. Since mixed passes pack their position-wise layers (<see cref="PackedTokens"/>), BERT-family plans take
    /// the fewest batches (5 of 8 for 33 texts, against 6 padded): both plans packed, alternating in one process, the
    /// fuller one cost 0–4 % less (seeds 1–3).
    /// </remarks>
    public static BucketCostModel Cpu(int hiddenSize) => new() { HiddenSize = hiddenSize, ReferenceRow = 0.5, PassOverheadRows = 1.5 };

    /// <summary>
    /// Accelerators: DeepLift is launch-bound (6.9× a forward at batch 16, 5.2× at 64), a pass costs many rows. Both
    /// overheads are estimates from those H200 figures, not measured for mixed lengths (no GPU was lent for #13).
    /// </summary>
    public static BucketCostModel Accelerator(int hiddenSize) => new() { HiddenSize = hiddenSize, PassOverheadRows = 16, GroupOverheadRows = 2 };

    /// <param name="packedTokens">The model packs its position-wise layers (<see cref="Architectures.IArchitecture.PacksTokens"/>).</param>
    public static BucketCostModel For(TorchSharp.DeviceType device, int hiddenSize, bool packedTokens = false) =>
        (device == TorchSharp.DeviceType.CPU ? Cpu(hiddenSize) : Accelerator(hiddenSize)) with { PackedTokens = packedTokens };

    /// <param name="tokens">The texts' own tokens (T); unknown (−1): every text counted at the width.</param>
    public double Cost(int texts, int width, int newLengths, int lengths = 1, long tokens = -1) =>
        TextsWork(texts, width, lengths, tokens)
        + (ReferenceRow * newLengths + PassOverheadRows * Passes(texts, width) + GroupOverheadRows * Math.Max(0, lengths - 1)) * RowWork(width);

    /// <summary>The texts' part of <see cref="Cost"/>: n rows of the width, or packed, their own tokens and attention (see the summary).</summary>
    public double TextsWork(int texts, int width, int lengths = 1, long tokens = -1)
    {
        if (!PackedTokens || lengths == 1 || tokens < 0) return texts * RowWork(width); // one length: no padding, nothing packed
        double positions = (double)texts * width;
        return tokens + PackedPaddingShare * (positions - tokens) + positions * width / (6.0 * HiddenSize);
    }

    /// <summary>One text row of <paramref name="width"/> tokens: <c>W · (1 + W / (6 H))</c> (see the summary).</summary>
    public double RowWork(int width) => width * (1 + width / (6.0 * HiddenSize));
}

/// <summary>
/// Splits texts into padded batches of nearby lengths at the least total <see cref="BucketCostModel.Cost"/>: texts sorted
/// by length (longest first), then the cheapest cut of that order into runs of at most the batch size (dynamic
/// programming over the cut points, O(texts × batch size)). A length cut across two batches counts its reference once
/// (the second batch finds its tape in the cache: tapes are kept per length, whatever the width). Deterministic: the same lengths give the same batches.
/// </summary>
public static class LengthBuckets
{
    /// <summary>
    /// Indices of texts per batch, longest texts first, each batch sorted by length (longest first). With
    /// <paramref name="batches"/>, exactly that many batches (at least the fewest the batch size allows): the cost model
    /// then only chooses where to cut.
    /// </summary>
    public static List<List<int>> Plan(IReadOnlyList<int> lengths, int batchSize, BucketCostModel cost, int? batches = null)
    {
        int n = lengths.Count, max = Math.Max(1, batchSize);
        if (n == 0) return new List<List<int>>();
        var order = Enumerable.Range(0, n).OrderByDescending(i => lengths[i]).ThenBy(i => i).ToArray();
        int fewest = (n + max - 1) / max;
        int count = batches is int b ? Math.Clamp(b, fewest, n) : 0;
        // best[k, end]: least cost of cutting order[0..end) into k batches (k = 0 when the count is free).
        int layers = count == 0 ? 1 : count + 1;
        var best = new double[layers, n + 1];
        var cut = new int[layers, n + 1];
        for (int k = 0; k < layers; k++)
            for (int e = 0; e <= n; e++) best[k, e] = double.PositiveInfinity;
        best[0, 0] = 0;
        for (int k = count == 0 ? 0 : 1; k < layers; k++)
            for (int end = 1; end <= n; end++)
            {
                int distinct = 0;
                long tokens = 0;
                int previous = count == 0 ? 0 : k - 1;
                for (int start = end - 1; start >= Math.Max(0, end - max); start--)
                {
                    // Walking the start back adds text order[start]; its length is new unless the next text shares it.
                    if (start == end - 1 || lengths[order[start]] != lengths[order[start + 1]]) distinct++;
                    tokens += lengths[order[start]];
                    if (double.IsPositiveInfinity(best[previous, start])) continue;
                    int width = lengths[order[start]];
                    // A length cut across two batches: the previous batch recorded its tape (tapes serve any width).
                    bool recorded = start > 0 && lengths[order[start - 1]] == width;
                    double c = best[previous, start] + cost.Cost(end - start, width, distinct - (recorded ? 1 : 0), distinct, tokens);
                    if (c < best[k, end]) { best[k, end] = c; cut[k, end] = start; }
                }
            }
        var buckets = new List<List<int>>();
        for (int end = n, k = layers - 1; end > 0; k = count == 0 ? 0 : k - 1)
        {
            int start = cut[k, end];
            buckets.Add(order[start..end].ToList());
            end = start;
        }
        buckets.Reverse();
        return buckets;
    }

    /// <summary>Texts grouped by exact length (longest first), chunked to the batch size: batches without padding.</summary>
    public static List<List<int>> Exact(IReadOnlyList<int> lengths, int batchSize) =>
        lengths.Select((l, i) => (l, i))
            .GroupBy(p => p.l)
            .OrderByDescending(g => g.Key)
            .SelectMany(g => g.Select(p => p.i).Chunk(Math.Max(1, batchSize)).Select(c => c.ToList()))
            .ToList();
}
