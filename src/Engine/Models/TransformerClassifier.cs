using AttributionFleet.Engine.Architectures;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Models;

/// <summary>
/// A post-LayerNorm BERT-style encoder with its head: BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA and bare mean-pooled
/// encoders share this forward; <see cref="ModelConfig"/> says where they differ (positions, token types, embedding
/// projection, head), their <see cref="Architectures.PostNormEncoder.PostNormEncoderArchitecture"/> the key names.
/// Weights are plain tensors by role that never require grad. Every op goes through <see cref="TensorOps"/>, so the
/// same forward predicts (plain ops) and attributes (DeepLift rules).
/// </summary>
public sealed class TransformerClassifier : ITextModel
{
    private readonly Dictionary<string, Tensor> _w;
    /// <summary>Per layer: Q, K and V stacked [3H, H] (the three roles are views into it): one matmul instead of three.</summary>
    private readonly (Tensor W, Tensor B)[] _qkv;
    /// <summary>Roles this instance frees (a model made by <see cref="WithClassifier"/> frees only its own head).</summary>
    private readonly HashSet<string> _owned;

    public ModelConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, Tensor> Weights => _w;

    /// <summary>The model owns <paramref name="weights"/> (frees them on dispose).</summary>
    internal TransformerClassifier(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights) : this(config, weights, null, null) { }

    private TransformerClassifier(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights, IEnumerable<string>? owned, (Tensor, Tensor)[]? sharedQkv)
    {
        Config = config;
        _w = new Dictionary<string, Tensor>(weights);
        _owned = new HashSet<string>(owned ?? _w.Keys);
        ActivationFor(config.HiddenAct);
        _qkv = sharedQkv ?? Enumerable.Range(0, config.Layers).Select(Fuse).ToArray();
        DType = _w["word"].dtype;
        Device = _w["word"].device;
    }

    private Tensor W(string role) => _w[role];
    private Tensor? Maybe(string role) => _w.TryGetValue(role, out var t) ? t : null;

    /// <summary>Stacks Q, K, V of layer <paramref name="i"/> and makes the three roles views into the stack.</summary>
    private (Tensor, Tensor) Fuse(int i)
    {
        string p = $"L{i}.";
        long h = W(p + "q").shape[0];
        var w = cat(new[] { W(p + "q"), W(p + "k"), W(p + "v") }, 0);
        var b = cat(new[] { W(p + "q.b"), W(p + "k.b"), W(p + "v.b") }, 0);
        // The stacked copies replace the originals: free them now rather than at some later GC, or loading a
        // checkpoint briefly holds Q, K and V twice (measured: peak RSS after loading bert-base 1.36x -> 1.57x the file).
        foreach (var part in new[] { "q", "k", "v", "q.b", "k.b", "v.b" }) _w[p + part].Dispose();
        _w[p + "q"] = w.narrow(0, 0, h); _w[p + "k"] = w.narrow(0, h, h); _w[p + "v"] = w.narrow(0, 2 * h, h);
        _w[p + "q.b"] = b.narrow(0, 0, h); _w[p + "k.b"] = b.narrow(0, h, h); _w[p + "v.b"] = b.narrow(0, 2 * h, h);
        return (w, b);
    }

    /// <summary>Number of outputs: labels (or values) for a head, the hidden size for a bare embedding encoder.</summary>
    public int OutputSize => Maybe("cls") is { } c ? (int)c.shape[0] : Config.HiddenSize;

    public bool HasClassifier => _w.ContainsKey("cls");

    public ProblemType Problem => HasClassifier ? (Config.Problem == ProblemType.Embedding ? ProblemType.SingleLabel : Config.Problem) : ProblemType.Embedding;

    public ITextModel To(ScalarType dtype, Device? device = null)
    {
        device ??= Device;
        var converted = _w.ToDictionary(p => p.Key, p => p.Value.to(dtype, device).detach());
        return new TransformerClassifier(Config, converted);
    }

    public ITextModel WithClassifier(Tensor weight, Tensor bias, IReadOnlyList<string> labels)
    {
        if (weight.shape.Length != 2 || weight.shape[1] != Config.HiddenSize || weight.shape[0] != labels.Count || bias.shape[0] != labels.Count)
            throw new ArgumentException($"classifier must be [{labels.Count}, {Config.HiddenSize}] with a bias of {labels.Count}");
        bool mean = Config.Head == HeadKind.MeanPooling;
        var config = Config with
        {
            Labels = labels.ToList(),
            Architecture = mean ? "MeanPoolingClassifier" : Config.Architecture,
            Problem = labels.Count == 1 ? ProblemType.Regression : ProblemType.SingleLabel,
        };
        var weights = new Dictionary<string, Tensor>(_w)
        {
            ["cls"] = weight.to(DType, Device).detach(),
            ["cls.b"] = bias.to(DType, Device).detach(),
        };
        return new TransformerClassifier(config, weights, owned: new[] { "cls", "cls.b" }, sharedQkv: _qkv);
    }

    public Tensor WordEmbeddings(Tensor ids) =>
        W("word").index_select(0, ids.reshape(-1)).reshape(ids.shape[0], ids.shape[1], -1);

    /// <summary>
    /// Position ids. BERT/DistilBERT/ELECTRA: 0..L−1. RoBERTa/XLM-R (HF's create_position_ids_from_input_ids):
    /// real tokens get pad+1, pad+2, …; padded positions get pad. Computed from the input's mask and
    /// used for the reference too, so positions contribute nothing.
    /// Shape [1, L] whenever every text has the same positions (BERT always, RoBERTa without padding), so that
    /// adding them keeps a reference shared by the batch one row wide through the whole network; [B, L] otherwise.
    /// </summary>
    public Tensor PositionIds(Tensor attentionMask)
    {
        long length = attentionMask.shape[1];
        if (Config.Positions == PositionScheme.Absolute)
            return arange(length, dtype: ScalarType.Int64, device: attentionMask.device).unsqueeze(0);
        var m = attentionMask.to_type(ScalarType.Int64);
        if (m.shape[0] > 1 && attentionMask.all().item<bool>()) m = m[..1];
        return m.cumsum(1) * m + Config.PadTokenId;
    }

    /// <summary>
    /// Additive attention bias <c>(1 − mask) · finfo.min</c> of shape [B, 1, 1, L], or null when no key is
    /// masked (the common case once texts are bucketed by length). The same constant is added to the
    /// input's and the reference's scores.
    /// </summary>
    public Tensor? AttentionBias(Tensor attentionMask)
    {
        using var scope = NewDisposeScope();
        if (attentionMask.all().item<bool>()) return null;
        double min = DType == ScalarType.Float64 ? double.MinValue : float.MinValue;
        var bias = (1 - attentionMask.to_type(DType)) * min;
        return bias.unsqueeze(1).unsqueeze(1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Embeddings after the word lookup: <c>LayerNorm(word + position + token_type[0])</c>, then ELECTRA's projection
    /// to the hidden size (a linear map, under the linear rule).
    /// </summary>
    public Act Embed(TensorOps ops, Act wordEmbeddings, Tensor positionIds)
    {
        var constant = W("position").index_select(0, positionIds.reshape(-1))
            .reshape(positionIds.shape[0], positionIds.shape[1], -1);
        if (Maybe("type") is { } type) constant = constant + type[0];
        var summed = ops.Map(wordEmbeddings, t => t + constant);
        var normed = ops.LayerNorm(summed, W("norm.w"), W("norm.b"), Config.LayerNormEps);
        return Maybe("proj") is { } proj ? ops.Linear(normed, proj, W("proj.b")) : normed;
    }

    public Act Encode(TensorOps ops, Act wordEmbeddings, Tensor attentionMask) => Encode(ops, wordEmbeddings, attentionMask, null);

    /// <summary>The encoder's last hidden state [B, L, H].</summary>
    public Act Encode(TensorOps ops, Act wordEmbeddings, Tensor attentionMask, Tensor? positionIds)
    {
        positionIds ??= PositionIds(attentionMask);
        var bias = AttentionBias(attentionMask);
        var h = Embed(ops, wordEmbeddings, positionIds);
        // Padded only where attention needs it: the rest of every layer runs on the real tokens (when the ops can).
        var packing = TokenPacking.For(ops, attentionMask);
        if (packing is not null) h = ops.Map(h, packing.Pack);
        var activation = ActivationFor(Config.HiddenAct);
        for (int i = 0; i < Config.Layers; i++)
        {
            // One dispose scope per layer: temporaries' handles go at the end of each layer, not of the pass.
            var input = h;
            string p = $"L{i}.";
            int layer = i;
            h = ActScope.Run(() =>
            {
                var attended = SelfAttention(ops, input, bias, layer, packing);
                var mid = ops.LayerNorm(ops.Add(attended, input), W(p + "ln1.w"), W(p + "ln1.b"), Config.LayerNormEps);
                var inner = ops.Apply(ops.Linear(mid, W(p + "ff1"), W(p + "ff1.b")), activation);
                var ffn = ops.Linear(inner, W(p + "ff2"), W(p + "ff2.b"));
                return ops.LayerNorm(ops.Add(ffn, mid), W(p + "ln2.w"), W(p + "ln2.b"), Config.LayerNormEps);
            });
        }
        return packing is null ? h : ops.Map(h, packing.Unpack);
    }

    public Act Forward(TensorOps ops, Act wordEmbeddings, Tensor attentionMask) => Forward(ops, wordEmbeddings, attentionMask, null);

    /// <summary>Logits [B, C] (or the pooled embedding [B, H] for a bare encoder without a classifier).</summary>
    public Act Forward(TensorOps ops, Act wordEmbeddings, Tensor attentionMask, Tensor? positionIds)
    {
        var h = Encode(ops, wordEmbeddings, attentionMask, positionIds);
        // Head on token 0: dense → activation → classifier (BERT's pooler, DistilBERT's pre_classifier, RoBERTa's and ELECTRA's heads).
        Act FirstToken(Activation a)
        {
            var first = ops.Map(h, t => t.select(1, 0));
            var dense = ops.Apply(ops.Linear(first, W("dense"), W("dense.b")), a);
            return ops.Linear(dense, W("cls"), W("cls.b"));
        }
        switch (Config.Head)
        {
            case HeadKind.BertPooler: return FirstToken(Activation.Tanh);
            case HeadKind.DistilBertPreClassifier: return FirstToken(Activation.Relu);
            case HeadKind.RobertaClassificationHead: return FirstToken(Activation.Tanh);
            case HeadKind.ElectraClassificationHead: return FirstToken(Activation.GeluErf);
            case HeadKind.MeanPooling:
            {
                // Masked mean over tokens: linear in h, the mask is a constant.
                var m = attentionMask.to_type(DType).unsqueeze(-1);
                var count = m.sum(1).clamp_min(1);
                var pooled = ops.Map(h, t => (t * m).sum(1) / count);
                return Maybe("cls") is { } cls ? ops.Linear(pooled, cls, W("cls.b")) : pooled;
            }
            default:
                throw new InvalidOperationException($"Unknown head {Config.Head}");
        }
    }

    public Tensor Logits(Tensor ids, Tensor attentionMask)
    {
        using var _ = no_grad();
        return Forward(PlainOps.Instance, new Act(WordEmbeddings(ids)), attentionMask).X;
    }

    /// <param name="packing">When given, <paramref name="h"/> is the real tokens packed, and so is the result: Q, K and V are padded for the attention, its context packed again.</param>
    private Act SelfAttention(TensorOps ops, Act h, Tensor? bias, int layer, TokenPacking? packing)
    {
        int heads = Config.Heads;
        long headDim = Config.HiddenSize / heads;
        Tensor SplitHeads(Tensor t) => t.reshape(t.shape[0], t.shape[1], heads, headDim).transpose(1, 2);
        long hidden = Config.HiddenSize;
        var (qkvW, qkvB) = _qkv[layer];
        var qkv = ops.Linear(h, qkvW, qkvB);
        if (packing is not null) qkv = ops.Map(qkv, packing.Unpack);
        var q = ops.Map(qkv, t => SplitHeads(t.narrow(-1, 0, hidden)));
        var k = ops.Map(qkv, t => SplitHeads(t.narrow(-1, hidden, hidden)));
        var v = ops.Map(qkv, t => SplitHeads(t.narrow(-1, 2 * hidden, hidden)));
        var attended = ops.Attention(q, k, v, bias, 1.0 / Math.Sqrt(headDim));
        var context = ops.Map(attended, t => t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1));
        if (packing is not null) context = ops.Map(context, packing.Pack);
        return ops.Linear(context, W($"L{layer}.o"), W($"L{layer}.o.b"));
    }

    public static Activation ActivationFor(string hiddenAct) => hiddenAct switch
    {
        "gelu" => Activation.GeluErf,
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluTanh,
        "relu" => Activation.Relu,
        "tanh" => Activation.Tanh,
        _ => throw new ModelLoadException($"Unsupported hidden_act '{hiddenAct}' (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, tanh)", field: "hidden_act"),
    };

    public void Dispose()
    {
        foreach (var role in _owned) if (_w.TryGetValue(role, out var t)) t.Dispose();
        if (_owned.Contains("word"))
            foreach (var (w, b) in _qkv) { w.Dispose(); b.Dispose(); }
    }
}
