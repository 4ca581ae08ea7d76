using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.DebertaV2;

/// <summary>
/// DebertaV2ForSequenceClassification's forward (HF modeling_deberta_v2.py), every op after the word embeddings through
/// <see cref="TensorOps"/>. How each part maps onto the existing DeepLift rules (no new op):
/// <list type="bullet">
/// <item>embeddings: <c>LayerNorm(word [+ position + type] [· embed_proj]) · mask</c> — linear maps, the LayerNorm rule, a
/// constant mask;</item>
/// <item>content→content: <c>q kᵀ / s</c>, q and k both input-dependent: the product rule;</item>
/// <item>content→position: <c>c2p[i, j] = q_i · Kr[c2p_pos(i, j)] / s</c> with <c>Kr = key_proj(LayerNorm(rel))</c>, a
/// constant of the model, and <c>c2p_pos</c> a constant of the length: <c>gather(q Krᵀ)</c> is linear in q
/// (<see cref="TensorOps.Map(Act, Func{Tensor, Tensor})"/>);</item>
/// <item>position→content: <c>p2c[i, j] = k_j · Qr[p2c_pos(j, i)] / s</c>, linear in k the same way;</item>
/// <item>the three add before the softmax (<see cref="TensorOps.Add"/>), so the softmax keeps its exact rule; the mask
/// is the usual additive constant on padded keys, and padded query rows are zeroed after the context product as
/// XSoftmax zeroes their probabilities (a constant mask);</item>
/// <item>post-LayerNorm blocks and ContextPooler (token 0 → dense → pooler_hidden_act) → classifier: existing rules.</item>
/// </list>
/// <c>s = sqrt(d · (1 + |pos_att_type|))</c>, computed in float32 as HF computes it.
/// </summary>
public sealed class DebertaV2Classifier : ITextModel
{
    private readonly Dictionary<string, Tensor> _w;
    private readonly DebertaV2Settings _s;
    /// <summary>Per layer, the relative-position keys <c>Kr</c> and queries <c>Qr</c> as [1, heads, 2·span, d] (null where unused): constants.</summary>
    private readonly (Tensor? Keys, Tensor? Queries)[] _positions;
    private readonly Activation _activation;
    private readonly Activation _poolerActivation;
    private readonly double _scale;

    public ModelConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, Tensor> Weights => _w;
    public int OutputSize => (int)_w["cls"].shape[0];
    public ProblemType Problem => Config.Problem;
    public bool HasClassifier => true;

    /// <summary>
    /// Measured (<c>fleet bench attribute --architecture deberta-v2 --layers 4 --batch 8 --max-rows 2|8</c>, peak RSS
    /// difference over 6 texts): 17 MiB a layer a text at 128 tokens against 8.9 counted for a BERT layer of the same
    /// sizes: the c2p and p2c scores ([heads, L, 2k] before their gathers, and the gathers' int64 indices) and their
    /// sum with c2c are kept too.
    /// </summary>
    public double DeepLiftMemoryScale => 1.9;

    /// <summary>The model owns <paramref name="weights"/> (frees them on dispose).</summary>
    internal DebertaV2Classifier(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights)
    {
        Config = config;
        _s = DebertaV2Architecture.SettingsOf(config);
        _w = new Dictionary<string, Tensor>(weights);
        _activation = TransformerClassifier.ActivationFor(config.HiddenAct);
        _poolerActivation = TransformerClassifier.ActivationFor(_s.PoolerActivation);
        DType = _w["word"].dtype;
        Device = _w["word"].device;
        long headDim = config.HiddenSize / config.Heads;
        _scale = MathF.Sqrt((float)(headDim * _s.ScaleFactor));
        _positions = Enumerable.Range(0, config.Layers).Select(PositionProjections).ToArray();
    }

    /// <summary>
    /// <c>Kr = key_proj(rel)</c> and <c>Qr = query_proj(rel)</c> (share_att_key; else pos_key_proj / pos_query_proj) of the
    /// relative embeddings after their LayerNorm, split into heads. Weights only: the same for every input.
    /// </summary>
    private (Tensor?, Tensor?) PositionProjections(int layer)
    {
        if (!_s.RelativeAttention) return (null, null);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var rel = _w["rel"].narrow(0, 0, 2L * _s.AttentionSpan);
        if (_s.NormalizeRelativeEmbeddings)
            rel = nn.functional.layer_norm(rel, new[] { rel.shape[^1] }, _w["rel.norm.w"], _w["rel.norm.b"], Config.LayerNormEps);
        string p = $"L{layer}.";
        Tensor Project(string role) => SplitHeads(nn.functional.linear(rel.unsqueeze(0), _w[p + role], _w[p + role + ".b"])).contiguous();
        var keys = _s.ContentToPosition ? Project(_s.ShareAttentionKey ? "k" : "pk") : null;
        var queries = _s.PositionToContent ? Project(_s.ShareAttentionKey ? "q" : "pq") : null;
        return (keys?.DetachFromDisposeScope(), queries?.DetachFromDisposeScope());
    }

    /// <summary>[B, L, H] → [B, heads, L, d].</summary>
    private Tensor SplitHeads(Tensor t) => t.reshape(t.shape[0], t.shape[1], Config.Heads, -1).transpose(1, 2);

    public Tensor WordEmbeddings(Tensor ids) =>
        _w["word"].index_select(0, ids.reshape(-1)).reshape(ids.shape[0], ids.shape[1], -1);

    /// <summary>
    /// <c>LayerNorm(word [+ position_embeddings[0..L) if position_biased_input] [+ token_type[0]] [· embed_proj])</c>, then
    /// times the mask (padded positions are exactly 0, as in HF).
    /// </summary>
    private Act Embed(TensorOps ops, Act words, Tensor? mask)
    {
        long length = words.X.shape[1];
        Tensor? constant = null;
        if (_s.PositionBiasedInput) constant = _w["position"].narrow(0, 0, length).unsqueeze(0);
        if (_w.TryGetValue("type", out var type)) constant = constant is null ? type[0] : constant + type[0];
        var x = constant is null ? words : ops.Map(words, t => t + constant);
        if (_w.TryGetValue("proj", out var proj)) x = ops.Linear(x, proj, null);
        x = ops.LayerNorm(x, _w["norm.w"], _w["norm.b"], Config.LayerNormEps);
        return mask is null ? x : ops.Map(x, t => t * mask);
    }

    public Act Encode(TensorOps ops, Act wordEmbeddings, Tensor attentionMask)
    {
        long length = wordEmbeddings.X.shape[1];
        if (length > Config.MaxPositions && _s.PositionBiasedInput)
            throw new ArgumentException($"{length} tokens exceed max_position_embeddings ({Config.MaxPositions})");
        bool padded = !attentionMask.all().item<bool>();
        // Constants of the batch: masks ([B, L, 1] on tokens, [B, 1, 1, L] additive on keys, [B, 1, L, 1] on query rows)
        // and the relative-position indices of this length.
        Tensor? tokenMask = padded ? attentionMask.to_type(DType).unsqueeze(-1) : null;
        Tensor? keyBias = padded ? ((1 - attentionMask.to_type(DType)) * (DType == ScalarType.Float64 ? double.MinValue : float.MinValue)).unsqueeze(1).unsqueeze(1) : null;
        Tensor? queryMask = tokenMask?.unsqueeze(1);
        var indices = _s.RelativeAttention ? RelativeIndices(length) : default;

        var h = Embed(ops, wordEmbeddings, tokenMask);
        for (int i = 0; i < Config.Layers; i++)
        {
            var input = h;
            int layer = i;
            string p = $"L{i}.";
            // One dispose scope per layer: temporaries' handles go at the end of each layer, not of the pass.
            h = ActScope.Run(() =>
            {
                var attended = SelfAttention(ops, input, layer, keyBias, queryMask, indices);
                var mid = ops.LayerNorm(ops.Add(attended, input), _w[p + "ln1.w"], _w[p + "ln1.b"], Config.LayerNormEps);
                var inner = ops.Apply(ops.Linear(mid, _w[p + "ff1"], _w[p + "ff1.b"]), _activation);
                var ffn = ops.Linear(inner, _w[p + "ff2"], _w[p + "ff2.b"]);
                return ops.LayerNorm(ops.Add(ffn, mid), _w[p + "ln2.w"], _w[p + "ln2.b"], Config.LayerNormEps);
            });
        }
        return h;
    }

    /// <summary>
    /// The gather indices of one length, narrowed to the rows of the position tables they reach:
    /// <c>c2p_pos = clamp(bucket(i − j) + span, 0, 2·span − 1)</c>, <c>p2c_pos = clamp(span − bucket(i − j), 0, 2·span − 1)</c>
    /// (HF's, indexed [key j, query i] for p2c), each minus its first row used.
    /// </summary>
    private RelativeIndex RelativeIndices(long length)
    {
        int span = _s.AttentionSpan;
        // On the CPU whatever the model's device: the buckets come from a float32 log and ceil, and the CPU's are the
        // ones the tests compare with PyTorch's table.
        using var cpu = RelativePositions.Build(length, _s.PositionBuckets, _s.MaxRelativePositions, CPU);
        using var rel = cpu.to(Device);
        var c2p = (rel + span).clamp(0, 2 * span - 1);
        var p2c = (span - rel).clamp(0, 2 * span - 1);
        long c2pFirst = c2p.min().item<long>(), c2pLast = c2p.max().item<long>();
        long p2cFirst = p2c.min().item<long>(), p2cLast = p2c.max().item<long>();
        return new RelativeIndex(c2p - c2pFirst, c2pFirst, c2pLast - c2pFirst + 1, p2c - p2cFirst, p2cFirst, p2cLast - p2cFirst + 1);
    }

    private readonly record struct RelativeIndex(Tensor C2P, long C2PFirst, long C2PRows, Tensor P2C, long P2CFirst, long P2CRows);

    private Act SelfAttention(TensorOps ops, Act h, int layer, Tensor? keyBias, Tensor? queryMask, RelativeIndex indices)
    {
        string p = $"L{layer}.";
        var q = ops.Map(ops.Linear(h, _w[p + "q"], _w[p + "q.b"]), SplitHeads);
        var k = ops.Map(ops.Linear(h, _w[p + "k"], _w[p + "k.b"]), SplitHeads);
        var v = ops.Map(ops.Linear(h, _w[p + "v"], _w[p + "v.b"]), SplitHeads);
        double scale = _scale;

        // content→content: the product rule (q and k both depend on the input).
        var scores = ops.Map(ops.MatMul(q, ops.Map(k, t => t.transpose(-1, -2))), t => t / scale);
        var (keys, queries) = _positions[layer];
        // content→position (linear in q) and position→content (linear in k), added before the softmax.
        if (keys is not null)
            scores = ops.Add(scores, DisentangledBias.ContentToPosition(ops, q, keys.narrow(2, indices.C2PFirst, indices.C2PRows), indices.C2P, scale));
        if (queries is not null)
            scores = ops.Add(scores, DisentangledBias.PositionToContent(ops, k, queries.narrow(2, indices.P2CFirst, indices.P2CRows), indices.P2C, scale));
        if (keyBias is not null) scores = ops.Map(scores, t => t + keyBias);
        var context = ops.MatMul(ops.Softmax(scores, -1), v);
        if (queryMask is not null) context = ops.Map(context, t => t * queryMask);
        var merged = ops.Map(context, t => t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1));
        return ops.Linear(merged, _w[p + "o"], _w[p + "o.b"]);
    }

    public Act Forward(TensorOps ops, Act wordEmbeddings, Tensor attentionMask)
    {
        var h = Encode(ops, wordEmbeddings, attentionMask);
        // ContextPooler: token 0 → dense → pooler_hidden_act; then the classifier.
        var first = ops.Map(h, t => t.select(1, 0));
        var pooled = ops.Apply(ops.Linear(first, _w["dense"], _w["dense.b"]), _poolerActivation);
        return ops.Linear(pooled, _w["cls"], _w["cls.b"]);
    }

    public Tensor Logits(Tensor ids, Tensor attentionMask)
    {
        using var _ = no_grad();
        return Forward(PlainOps.Instance, new Act(WordEmbeddings(ids)), attentionMask).X;
    }

    public ITextModel To(ScalarType dtype, Device? device = null)
    {
        device ??= Device;
        return new DebertaV2Classifier(Config, _w.ToDictionary(p => p.Key, p => p.Value.to(dtype, device).detach()));
    }

    public ITextModel WithClassifier(Tensor weight, Tensor bias, IReadOnlyList<string> labels) =>
        throw new InvalidOperationException($"{Config.Architecture} has its own classifier; a linear head is put on bare mean-pooled encoders only");

    public void Dispose()
    {
        foreach (var t in _w.Values) t.Dispose();
        foreach (var (keys, queries) in _positions) { keys?.Dispose(); queries?.Dispose(); }
    }
}
