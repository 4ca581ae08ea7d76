using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.DebertaV2;

/// <summary>
/// DebertaV2ForSequenceClassification's forward (HF modeling_deberta_v2.py, DeBERTa-v3 configuration), every op after the
/// word embeddings through <see cref="TensorOps"/>, each onto an existing rule:
/// <list type="bullet">
/// <item>embeddings <c>LayerNorm(word) · mask</c>: the LayerNorm rule, then a constant mask (linear);</item>
/// <item>content→content <c>q kᵀ / s</c>: the product rule;</item>
/// <item>content→position <c>gather(q P_kᵀ, c2p_idx) / s</c> and position→content <c>gather(k P_qᵀ, p2c_idx)ᵀ / s</c>:
/// products of one input-dependent tensor with the constant position projections <c>P = proj(LayerNorm(rel_embeddings))</c>,
/// then a gather by constant indices: linear, <c>ops.Map</c>;</item>
/// <item>scores of a padded query or key replaced by finfo.min (HF's masked_fill): affine with a constant, <c>ops.Map</c>;
/// then the softmax rule and the product rule for the context;</item>
/// <item>post-LN blocks, ContextPooler (dense + activation on token 0), classifier: as BERT's.</item>
/// </list>
/// s = sqrt(d · (1 + |pos_att_type|)) computed in float32 as HF does.
/// </summary>
public sealed class DebertaV2Classifier : ITextModel
{
    private readonly Dictionary<string, Tensor> _w;
    private readonly DebertaV2Settings _s;

    public ModelConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, Tensor> Weights => _w;
    public int OutputSize => (int)_w["cls"].shape[0];
    public bool HasClassifier => true;
    public ProblemType Problem => Config.Problem;

    /// <summary>The model owns <paramref name="weights"/> (frees them on dispose).</summary>
    internal DebertaV2Classifier(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights)
    {
        Config = config;
        _s = DebertaV2Architecture.SettingsOf(config);
        _w = new Dictionary<string, Tensor>(weights);
        TransformerClassifier.ActivationFor(config.HiddenAct);
        TransformerClassifier.ActivationFor(_s.PoolerActivation);
        DType = _w["word"].dtype;
        Device = _w["word"].device;
    }

    private Tensor W(string role) => _w[role];

    public Tensor WordEmbeddings(Tensor ids) =>
        W("word").index_select(0, ids.reshape(-1)).reshape(ids.shape[0], ids.shape[1], -1);

    private Act Norm(TensorOps ops, Act a, string role) => ops.LayerNorm(a, W(role + ".w"), W(role + ".b"), Config.LayerNormEps);

    /// <summary>
    /// HF's build_relative_position: <c>rel[i, j] = i − j</c>, with position_buckets &gt; 0 mapped by make_log_bucket_position
    /// (exact within ±mid, mid = buckets / 2; beyond, <c>sign · (ceil(log(|r| / mid) / log((max_relative − 1) / mid) ·
    /// (mid − 1)) + mid)</c>, in float32 as HF computes it). [L, L], int64.
    /// </summary>
    public Tensor RelativePositions(long length)
    {
        using var scope = NewDisposeScope();
        var ids = arange(length, dtype: ScalarType.Int64);
        var rel = ids.unsqueeze(1) - ids.unsqueeze(0);
        if (_s.PositionBuckets > 0 && _s.MaxRelativePositions > 0)
        {
            long mid = _s.PositionBuckets / 2;
            var sign = rel.sign();
            var absPos = where(rel.lt(mid).logical_and(rel.gt(-mid)), tensor(mid - 1), rel.abs());
            var denominator = tensor((float)((_s.MaxRelativePositions - 1) / (double)mid), ScalarType.Float32).log();
            var logPos = ((absPos.to_type(ScalarType.Float32) / mid).log() / denominator * (mid - 1)).ceil() + mid;
            rel = where(absPos.le(mid), rel.to_type(ScalarType.Float32), logPos * sign.to_type(ScalarType.Float32)).to_type(ScalarType.Int64);
        }
        return rel.MoveToOuterDisposeScope();
    }

    /// <summary>The relative embeddings the attention reads (rows 0..2·span), through the encoder's LayerNorm when configured: model constants.</summary>
    private Tensor RelativeEmbeddings()
    {
        var rel = W("rel").narrow(0, 0, 2L * _s.AttentionSpan);
        return _s.NormRelEmbeddings
            ? nn.functional.layer_norm(rel, new[] { rel.shape[^1] }, W("rel.norm.w"), W("rel.norm.b"), Config.LayerNormEps)
            : rel;
    }

    public Act Encode(TensorOps ops, Act wordEmbeddings, Tensor attentionMask)
    {
        using var outer = NewDisposeScope();
        long length = attentionMask.shape[1];
        var maskF = attentionMask.to_type(DType).unsqueeze(2);
        // HF: attention_mask[b, 0, i, j] = mask_i · mask_j; null when nothing is padded.
        Tensor? keep = null;
        if (!attentionMask.all().item<bool>())
        {
            var m = attentionMask.to_type(ScalarType.Bool);
            keep = m.unsqueeze(1).unsqueeze(2).logical_and(m.unsqueeze(1).unsqueeze(3));
        }
        var rel = RelativePositions(length).to(Device);
        long span = _s.AttentionSpan;
        var c2pIndex = (rel + span).clamp(0, 2 * span - 1);
        var p2cIndex = (-rel + span).clamp(0, 2 * span - 1);
        Tensor relEmbeddings;
        using (no_grad()) relEmbeddings = RelativeEmbeddings();

        var embedded = Norm(ops, wordEmbeddings, "emb.norm");
        var h = ops.Map(embedded, t => t * maskF);
        for (int i = 0; i < Config.Layers; i++)
        {
            var input = h;
            int layer = i;
            h = ActScope.Run(() =>
            {
                string p = $"L{layer}.";
                var attended = SelfAttention(ops, input, layer, keep, relEmbeddings, c2pIndex, p2cIndex);
                var mid = Norm(ops, ops.Add(ops.Linear(attended, W(p + "o"), W(p + "o.b")), input), p + "ln1");
                var inner = ops.Apply(ops.Linear(mid, W(p + "ff1"), W(p + "ff1.b")), TransformerClassifier.ActivationFor(Config.HiddenAct));
                return Norm(ops, ops.Add(ops.Linear(inner, W(p + "ff2"), W(p + "ff2.b")), mid), p + "ln2");
            });
        }
        outer.MoveToOuter(h.R is null ? new[] { h.X } : new[] { h.X, h.R });
        return h;
    }

    private Act SelfAttention(TensorOps ops, Act h, int layer, Tensor? keep, Tensor relEmbeddings, Tensor c2pIndex, Tensor p2cIndex)
    {
        int heads = Config.Heads;
        long headDim = Config.HiddenSize / heads, length = c2pIndex.shape[0];
        string p = $"L{layer}.";
        Tensor SplitHeads(Tensor t) => t.reshape(t.shape[0], t.shape[1], heads, headDim).transpose(1, 2);
        // HF: scale = torch.sqrt(torch.tensor(d, dtype=torch.float) * scale_factor), a float32, cast to the model's dtype.
        double scale = (float)Math.Sqrt((double)(float)(headDim * _s.ScaleFactor));
        var q = ops.Map(ops.Linear(h, W(p + "q"), W(p + "q.b")), SplitHeads);
        var k = ops.Map(ops.Linear(h, W(p + "k"), W(p + "k.b")), SplitHeads);
        var v = ops.Map(ops.Linear(h, W(p + "v"), W(p + "v.b")), SplitHeads);

        var scores = ops.Map(ops.MatMul(q, ops.Map(k, t => t.transpose(-1, -2))), t => t / scale);
        // The position projections of the relative embeddings: constants of the model ([1, heads, 2 span, d]).
        Tensor Positions(string role)
        {
            using var _ = no_grad();
            return SplitHeads(nn.functional.linear(relEmbeddings, W(role), W(role + ".b")).unsqueeze(0));
        }
        if (_s.ContentToPosition)
        {
            var posKey = Positions(_s.ShareAttKey ? p + "k" : p + "posk").transpose(-1, -2);
            // c2p[b, h, i, j] = q_i · P_k[c2p_idx(i, j)]: linear in q.
            var c2p = ops.Map(q, t => t.matmul(posKey).gather(-1, c2pIndex.expand(t.shape[0], t.shape[1], length, length)) / scale);
            scores = ops.Add(scores, c2p);
        }
        if (_s.PositionToContent)
        {
            var posQuery = Positions(_s.ShareAttKey ? p + "q" : p + "posq").transpose(-1, -2);
            // p2c[b, h, i, j] = k_j · P_q[p2c_idx(j, i)]: linear in k.
            var p2c = ops.Map(k, t => t.matmul(posQuery).gather(-1, p2cIndex.expand(t.shape[0], t.shape[1], length, length)).transpose(-1, -2) / scale);
            scores = ops.Add(scores, p2c);
        }
        if (keep is not null)
        {
            double min = DType == ScalarType.Float64 ? double.MinValue : float.MinValue;
            var masked = keep.logical_not();
            // where() rather than masked_fill: it broadcasts a reference half shared by the batch (one row).
            var fill = tensor(min, DType, Device);
            scores = ops.Map(scores, t => where(masked, fill, t));
        }
        var context = ops.MatMul(ops.Softmax(scores, -1), v);
        return ops.Map(context, t => t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1));
    }

    /// <summary>ContextPooler (token 0 → dense → activation) → classifier.</summary>
    public Act Forward(TensorOps ops, Act wordEmbeddings, Tensor attentionMask)
    {
        var h = Encode(ops, wordEmbeddings, attentionMask);
        var first = ops.Map(h, t => t.select(1, 0));
        var pooled = ops.Apply(ops.Linear(first, W("dense"), W("dense.b")), TransformerClassifier.ActivationFor(_s.PoolerActivation));
        return ops.Linear(pooled, W("cls"), W("cls.b"));
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
        throw new InvalidOperationException($"{Config.Architecture} has its own pooler and classifier; a linear head goes only on a bare mean-pooled encoder");

    public void Dispose()
    {
        foreach (var t in _w.Values) t.Dispose();
    }
}
