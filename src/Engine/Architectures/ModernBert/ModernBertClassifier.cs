using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.ModernBert;

/// <summary>
/// ModernBertForSequenceClassification's forward (HF modeling_modernbert.py, eager attention on padded inputs), every op
/// after the word embeddings through <see cref="TensorOps"/>, each onto an existing rule:
/// <list type="bullet">
/// <item>LayerNorm without bias (norm_bias false): the LayerNorm rule with β = 0;</item>
/// <item>rotary positions <c>q cos + rotate_half(q) sin</c>: linear in q (the tables are constants), <c>ops.Map</c>;</item>
/// <item>global and sliding-window attention: additive mask biases, constants like the padding mask, then the
/// attention's product and softmax rules;</item>
/// <item>GeGLU <c>act(input) · gate</c> with <c>input, gate = Wi(x).chunk(2)</c>: the rescale rule, then the product rule.</item>
/// </list>
/// Weights are plain tensors by role (see <see cref="ModernBertArchitecture.Weights"/>) that never require grad.
/// </summary>
public sealed class ModernBertClassifier : ITextModel
{
    private readonly Dictionary<string, Tensor> _w;
    private readonly ModernBertSettings _s;
    /// <summary>β = 0 for the LayerNorms without bias (the rule takes a bias tensor).</summary>
    private readonly Tensor _zeros;

    public ModelConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, Tensor> Weights => _w;
    public int OutputSize => (int)_w["cls"].shape[0];
    public bool HasClassifier => true;

    /// <summary>
    /// Measured (<c>fleet bench attribute --architecture modernbert --layers 4 --batch 8 --max-rows 2|8</c>, peak RSS
    /// difference over 6 texts): 12 MiB a layer a text at 128 tokens against 7.6 counted for a BERT layer of the same
    /// sizes: GeGLU's two halves and their product, the rotated q and k, and the masked scores are kept too.
    /// </summary>
    public double DeepLiftMemoryScale => 1.6;
    public ProblemType Problem => Config.Problem;

    /// <summary>The model owns <paramref name="weights"/> (frees them on dispose).</summary>
    internal ModernBertClassifier(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights)
    {
        Config = config;
        _s = ModernBertArchitecture.SettingsOf(config);
        _w = new Dictionary<string, Tensor>(weights);
        // Both activations are checked at build, so a bad name fails at load rather than at the first forward.
        TransformerClassifier.ActivationFor(config.HiddenAct);
        TransformerClassifier.ActivationFor(_s.ClassifierActivation);
        DType = _w["word"].dtype;
        Device = _w["word"].device;
        _zeros = zeros(config.HiddenSize, dtype: DType, device: Device);
    }

    private Tensor W(string role) => _w[role];
    private Tensor? Maybe(string role) => _w.TryGetValue(role, out var t) ? t : null;

    public Tensor WordEmbeddings(Tensor ids) =>
        W("word").index_select(0, ids.reshape(-1)).reshape(ids.shape[0], ids.shape[1], -1);

    private Act Norm(TensorOps ops, Act a, string role) =>
        ops.LayerNorm(a, W(role + ".w"), Maybe(role + ".b") ?? _zeros, Config.LayerNormEps);

    /// <summary>
    /// The additive attention biases (constants, the same for input and reference): global layers
    /// <c>(1 − mask_j) · finfo.min</c> [B, 1, 1, L] (null without padding); sliding layers additionally finfo.min where
    /// <c>|i − j| &gt; local_attention / 2</c> ([B or 1, 1, L, L]; null when the window covers the whole text and
    /// nothing is padded). As HF, a position outside the window is set to finfo.min (masked_fill), never min + min.
    /// </summary>
    public (Tensor? Global, Tensor? Local) AttentionBiases(Tensor attentionMask)
    {
        using var scope = NewDisposeScope();
        long length = attentionMask.shape[1];
        double min = DType == ScalarType.Float64 ? double.MinValue : float.MinValue;
        bool padded = !attentionMask.all().item<bool>();
        Tensor? global = padded ? ((1 - attentionMask.to_type(DType)) * min).unsqueeze(1).unsqueeze(1) : null;
        var rows = arange(length, dtype: ScalarType.Int64, device: attentionMask.device);
        var outside = (rows.unsqueeze(0) - rows.unsqueeze(1)).abs() > _s.LocalAttention / 2;
        Tensor? local = null;
        if (outside.any().item<bool>() || padded)
        {
            var baseBias = global?.expand(-1, 1, length, -1) ?? zeros(1, 1, length, length, dtype: DType, device: attentionMask.device);
            local = baseBias.masked_fill(outside.unsqueeze(0).unsqueeze(0), min);
        }
        global?.MoveToOuterDisposeScope();
        local?.MoveToOuterDisposeScope();
        return (global, local);
    }

    /// <summary>
    /// HF's default rotary tables for positions 0..L−1: <c>inv_freq = 1 / θ^(2k/d)</c>, angles <c>p · inv_freq</c>
    /// duplicated over both halves, cos and sin. inv_freq and the angles are float32 as in HF (its rounding of the
    /// angles grows with the position, and the model was trained with it); inv_freq is computed in float64 and rounded
    /// once, cos and sin in float64 of the float32 angles, so that no float32 pow/cos kernel of a libtorch version
    /// decides the last ulp. Then cast to the model's dtype.
    /// </summary>
    public (Tensor Cos, Tensor Sin) RotaryTables(double theta, long length)
    {
        using var scope = NewDisposeScope();
        long dim = Config.HiddenSize / Config.Heads;
        var exponent = arange(0, dim, 2, dtype: ScalarType.Float64) / dim;
        var invFreq = (1.0 / tensor(theta, ScalarType.Float64).pow(exponent)).to_type(ScalarType.Float32);
        var freqs = arange(length, dtype: ScalarType.Int64).to_type(ScalarType.Float32).unsqueeze(1) * invFreq.unsqueeze(0);
        var angles = cat(new[] { freqs, freqs }, -1).to_type(ScalarType.Float64);
        var cos = angles.cos().to(DType, Device).MoveToOuterDisposeScope();
        var sin = angles.sin().to(DType, Device).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary><c>rotate_half(x) = cat(−x₂, x₁)</c> over the last dim's halves: a fixed signed permutation (linear).</summary>
    private static Tensor RotateHalf(Tensor t)
    {
        long half = t.shape[^1] / 2;
        return cat(new[] { -t.narrow(-1, half, half), t.narrow(-1, 0, half) }, -1);
    }

    public Act Encode(TensorOps ops, Act wordEmbeddings, Tensor attentionMask)
    {
        long length = attentionMask.shape[1];
        var (globalBias, localBias) = AttentionBiases(attentionMask);
        var globalRope = RotaryTables(_s.GlobalRopeTheta, length);
        var localRope = RotaryTables(_s.LocalRopeTheta, length);
        try
        {
            var h = Norm(ops, wordEmbeddings, "emb.norm");
            for (int i = 0; i < Config.Layers; i++)
            {
                // One dispose scope per layer: temporaries' handles go at the end of each layer, not of the pass.
                var input = h;
                int layer = i;
                bool sliding = _s.SlidingLayers[i];
                h = ActScope.Run(() =>
                {
                    string p = $"L{layer}.";
                    var normed = layer == 0 ? input : Norm(ops, input, p + "attn_norm");
                    var attended = SelfAttention(ops, normed, layer, sliding ? localBias : globalBias, sliding ? localRope : globalRope);
                    var mid = ops.Add(input, attended);
                    return ops.Add(mid, Mlp(ops, Norm(ops, mid, p + "mlp_norm"), layer));
                });
            }
            return Norm(ops, h, "final_norm");
        }
        finally
        {
            globalBias?.Dispose(); localBias?.Dispose();
            globalRope.Cos.Dispose(); globalRope.Sin.Dispose(); localRope.Cos.Dispose(); localRope.Sin.Dispose();
        }
    }

    private Act SelfAttention(TensorOps ops, Act h, int layer, Tensor? bias, (Tensor Cos, Tensor Sin) rope)
    {
        int heads = Config.Heads;
        long hidden = Config.HiddenSize, headDim = hidden / heads;
        string p = $"L{layer}.";
        // Wqkv's output is [q | k | v], each heads × head_dim (HF: view(b, l, 3, heads, d)).
        Tensor SplitHeads(Tensor t) => t.reshape(t.shape[0], t.shape[1], heads, headDim).transpose(1, 2);
        var qkv = ops.Linear(h, W(p + "qkv"), Maybe(p + "qkv.b"));
        // Rotary: q·cos + rotate_half(q)·sin, linear in q with constant tables.
        Tensor Rotate(Tensor t) => t * rope.Cos + RotateHalf(t) * rope.Sin;
        var q = ops.Map(qkv, t => Rotate(SplitHeads(t.narrow(-1, 0, hidden))));
        var k = ops.Map(qkv, t => Rotate(SplitHeads(t.narrow(-1, hidden, hidden))));
        var v = ops.Map(qkv, t => SplitHeads(t.narrow(-1, 2 * hidden, hidden)));
        double scale = 1.0 / Math.Sqrt(headDim);
        Act attended;
        if (ops is PlainOps || bias is null) attended = ops.Attention(q, k, v, bias, scale);
        else
        {
            // The masked scores are replaced by finfo.min (masked_fill, as HF's sliding-window mask), not added to it:
            // the values are the same (score + finfo.min rounds to finfo.min), but an added bias keeps the Jacobian 1
            // at entries whose value no longer depends on the score. Where a padded query's window holds only padded
            // keys, its whole row is finfo.min in both halves, its softmax uniform and unchanged (Δy = 0), yet the
            // linear rule would pass multipliers 1/n through it: contributions without a change. Replaced entries
            // have multiplier 0, so such a row contributes exactly nothing (NewOpConservationTests).
            var masked = bias.lt(0);
            double min = DType == ScalarType.Float64 ? double.MinValue : float.MinValue;
            // where() rather than masked_fill: the reference half may be one row shared by a padded batch.
            var fill = tensor(min, DType, Device);
            var scores = ops.Map(ops.MatMul(q, ops.Map(k, t => t.transpose(-1, -2))), t => where(masked, fill, t * scale));
            attended = ops.MatMul(ops.Softmax(scores, -1), v);
        }
        var context = ops.Map(attended, t => t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1));
        return ops.Linear(context, W(p + "o"), Maybe(p + "o.b"));
    }

    /// <summary>GeGLU: <c>Wo(act(input) · gate)</c>, <c>input, gate = Wi(x).chunk(2, −1)</c> (input first).</summary>
    private Act Mlp(TensorOps ops, Act x, int layer)
    {
        string p = $"L{layer}.";
        long inter = Config.IntermediateSize;
        var wi = ops.Linear(x, W(p + "wi"), Maybe(p + "wi.b"));
        var input = ops.Map(wi, t => t.narrow(-1, 0, inter));
        var gate = ops.Map(wi, t => t.narrow(-1, inter, inter));
        var gated = ops.Mul(ops.Apply(input, TransformerClassifier.ActivationFor(Config.HiddenAct)), gate);
        return ops.Linear(gated, W(p + "wo"), Maybe(p + "wo.b"));
    }

    /// <summary>Pooling (token 0, or the masked mean: linear, the mask a constant) → dense → activation → norm → classifier.</summary>
    public Act Forward(TensorOps ops, Act wordEmbeddings, Tensor attentionMask)
    {
        var h = Encode(ops, wordEmbeddings, attentionMask);
        Act pooled;
        if (_s.Pooling == ModernBertPooling.Cls) pooled = ops.Map(h, t => t.select(1, 0));
        else
        {
            var m = attentionMask.to_type(DType).unsqueeze(-1);
            var count = m.sum(1);
            pooled = ops.Map(h, t => (t * m).sum(1) / count);
        }
        var dense = ops.Apply(ops.Linear(pooled, W("head.dense"), Maybe("head.dense.b")), TransformerClassifier.ActivationFor(_s.ClassifierActivation));
        var normed = Norm(ops, dense, "head.norm");
        return ops.Linear(normed, W("cls"), W("cls.b"));
    }

    public Tensor Logits(Tensor ids, Tensor attentionMask)
    {
        using var _ = no_grad();
        return Forward(PlainOps.Instance, new Act(WordEmbeddings(ids)), attentionMask).X;
    }

    public ITextModel To(ScalarType dtype, Device? device = null)
    {
        device ??= Device;
        return new ModernBertClassifier(Config, _w.ToDictionary(p => p.Key, p => p.Value.to(dtype, device).detach()));
    }

    public ITextModel WithClassifier(Tensor weight, Tensor bias, IReadOnlyList<string> labels) =>
        throw new InvalidOperationException($"{Config.Architecture} has its own head and classifier; a linear head goes only on a bare mean-pooled encoder");

    public void Dispose()
    {
        foreach (var t in _w.Values) t.Dispose();
        _zeros.Dispose();
    }
}
