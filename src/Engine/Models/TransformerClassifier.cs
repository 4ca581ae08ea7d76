using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Ops;
using TorchSharp;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Models;

/// <summary>Weights of one encoder layer (post-LayerNorm, as in BERT, RoBERTa and DistilBERT).</summary>
public sealed record EncoderLayerWeights(
    Tensor Query, Tensor QueryBias, Tensor Key, Tensor KeyBias, Tensor Value, Tensor ValueBias,
    Tensor AttentionOut, Tensor AttentionOutBias, Tensor AttentionNormWeight, Tensor AttentionNormBias,
    Tensor Intermediate, Tensor IntermediateBias, Tensor Output, Tensor OutputBias,
    Tensor OutputNormWeight, Tensor OutputNormBias)
{
    /// <summary>Query, key and value stacked [3H, H] (the three are views into it): one matmul instead of three.</summary>
    public Tensor? Qkv { get; private init; }
    public Tensor? QkvBias { get; private init; }

    /// <summary>Stacks Q, K, V into one weight and bias and makes the three views into them.</summary>
    public EncoderLayerWeights Fused()
    {
        if (Qkv is not null) return this;
        long h = Query.shape[0];
        var w = cat(new[] { Query, Key, Value }, 0);
        var b = cat(new[] { QueryBias, KeyBias, ValueBias }, 0);
        // The stacked copies replace the originals: free them now rather than at some later GC, or loading a
        // checkpoint briefly holds Q, K and V twice (measured: peak RSS after loading bert-base 1.36x -> 1.57x the file).
        foreach (var t in new[] { Query, Key, Value, QueryBias, KeyBias, ValueBias }) t.Dispose();
        return this with
        {
            Qkv = w, QkvBias = b,
            Query = w.narrow(0, 0, h), Key = w.narrow(0, h, h), Value = w.narrow(0, 2 * h, h),
            QueryBias = b.narrow(0, 0, h), KeyBias = b.narrow(0, h, h), ValueBias = b.narrow(0, 2 * h, h),
        };
    }

    public EncoderLayerWeights Convert(Func<Tensor, Tensor> f) => new(
        f(Query), f(QueryBias), f(Key), f(KeyBias), f(Value), f(ValueBias), f(AttentionOut), f(AttentionOutBias),
        f(AttentionNormWeight), f(AttentionNormBias), f(Intermediate), f(IntermediateBias), f(Output), f(OutputBias),
        f(OutputNormWeight), f(OutputNormBias));
}

/// <summary>
/// A BERT-family encoder with its classification head: BERT, DistilBERT, RoBERTa and bare mean-pooled
/// encoders share this code; <see cref="ModelConfig"/> says where they differ (positions, token types,
/// head). Weights are plain tensors that never require grad. Every op goes through <see cref="TensorOps"/>,
/// so the same forward predicts (plain ops) and attributes (DeepLift rules).
/// </summary>
public sealed class TransformerClassifier : IDisposable
{
    private readonly bool _ownsEncoder;

    public ModelConfig Config { get; }
    public ScalarType DType { get; }
    public Device Device { get; }

    internal Tensor WordEmbeddingTable { get; }
    internal Tensor PositionEmbeddings { get; }
    internal Tensor? TokenTypeEmbeddings { get; }
    internal Tensor EmbeddingNormWeight { get; }
    internal Tensor EmbeddingNormBias { get; }
    internal IReadOnlyList<EncoderLayerWeights> Layers { get; }
    /// <summary>Head tensors by role: pooler/pre_classifier/dense (first), classifier/out_proj (second).</summary>
    internal Tensor? HeadDense { get; }
    internal Tensor? HeadDenseBias { get; }
    internal Tensor? Classifier { get; }
    internal Tensor? ClassifierBias { get; }

    internal TransformerClassifier(ModelConfig config, Tensor word, Tensor position, Tensor? tokenType,
        Tensor normWeight, Tensor normBias, IReadOnlyList<EncoderLayerWeights> layers,
        Tensor? headDense, Tensor? headDenseBias, Tensor? classifier, Tensor? classifierBias, bool ownsEncoder = true)
    {
        _ownsEncoder = ownsEncoder;
        Config = config;
        WordEmbeddingTable = word;
        PositionEmbeddings = position;
        TokenTypeEmbeddings = tokenType;
        EmbeddingNormWeight = normWeight;
        EmbeddingNormBias = normBias;
        Layers = layers.Select(l => l.Fused()).ToList();
        HeadDense = headDense;
        HeadDenseBias = headDenseBias;
        Classifier = classifier;
        ClassifierBias = classifierBias;
        DType = word.dtype;
        Device = word.device;
    }

    /// <summary>Number of outputs: labels for a classifier, the hidden size for a bare embedding encoder.</summary>
    public int OutputSize => Classifier is null ? Config.HiddenSize : (int)Classifier.shape[0];

    public bool HasClassifier => Classifier is not null;

    /// <summary>A copy in another precision and/or on another device (the weights are converted once).</summary>
    public TransformerClassifier To(ScalarType dtype, Device? device = null)
    {
        device ??= Device;
        Tensor C(Tensor t) => t.to(dtype, device).detach();
        Tensor? CN(Tensor? t) => t is null ? null : C(t);
        return new TransformerClassifier(Config, C(WordEmbeddingTable), C(PositionEmbeddings), CN(TokenTypeEmbeddings),
            C(EmbeddingNormWeight), C(EmbeddingNormBias), Layers.Select(l => l.Convert(C)).ToList(),
            CN(HeadDense), CN(HeadDenseBias), CN(Classifier), CN(ClassifierBias));
    }

    /// <summary>The same encoder (weights shared, not copied) with a linear classifier on its pooled output.</summary>
    public TransformerClassifier WithClassifier(Tensor weight, Tensor bias, IReadOnlyList<string> labels)
    {
        if (weight.shape.Length != 2 || weight.shape[1] != Config.HiddenSize || weight.shape[0] != labels.Count || bias.shape[0] != labels.Count)
            throw new ArgumentException($"classifier must be [{labels.Count}, {Config.HiddenSize}] with a bias of {labels.Count}");
        var head = Config.Head == HeadKind.MeanPooling ? HeadKind.MeanPooling : Config.Head;
        var config = Config with { Labels = labels.ToList(), Head = head, Architecture = Config.Head == HeadKind.MeanPooling ? "MeanPoolingClassifier" : Config.Architecture };
        return new TransformerClassifier(config, WordEmbeddingTable, PositionEmbeddings, TokenTypeEmbeddings, EmbeddingNormWeight,
            EmbeddingNormBias, Layers, HeadDense, HeadDenseBias, weight.to(DType, Device).detach(), bias.to(DType, Device).detach(),
            ownsEncoder: false);
    }

    /// <summary>Word-embedding lookup: the point where attributions are taken.</summary>
    public Tensor WordEmbeddings(Tensor ids) =>
        WordEmbeddingTable.index_select(0, ids.reshape(-1)).reshape(ids.shape[0], ids.shape[1], -1);

    /// <summary>
    /// Position ids. BERT/DistilBERT: 0..L−1. RoBERTa (HF's create_position_ids_from_input_ids):
    /// real tokens get pad+1, pad+2, …; padded positions get pad. Computed from the input's mask and
    /// used for the reference too, so positions contribute nothing.
    /// Shape [1, L] whenever every text has the same positions (BERT always, RoBERTa without padding), so that
    /// adding them keeps a reference shared by the batch one row wide through the whole network; [B, L] otherwise.
    /// </summary>
    public Tensor PositionIds(Tensor attentionMask)
    {
        long length = attentionMask.shape[1];
        if (Config.Family != ModelFamily.Roberta)
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

    /// <summary>Embeddings after the word lookup: <c>LayerNorm(word + position + token_type[0])</c>.</summary>
    public Act Embed(TensorOps ops, Act wordEmbeddings, Tensor positionIds)
    {
        var constant = PositionEmbeddings.index_select(0, positionIds.reshape(-1))
            .reshape(positionIds.shape[0], positionIds.shape[1], -1);
        if (TokenTypeEmbeddings is not null) constant = constant + TokenTypeEmbeddings[0];
        var summed = ops.Map(wordEmbeddings, t => t + constant);
        return ops.LayerNorm(summed, EmbeddingNormWeight, EmbeddingNormBias, Config.LayerNormEps);
    }

    /// <summary>The encoder's last hidden state [B, L, H].</summary>
    public Act Encode(TensorOps ops, Act wordEmbeddings, Tensor attentionMask, Tensor? positionIds = null)
    {
        positionIds ??= PositionIds(attentionMask);
        var bias = AttentionBias(attentionMask);
        var h = Embed(ops, wordEmbeddings, positionIds);
        var activation = ActivationFor(Config.HiddenAct);
        foreach (var layer in Layers)
        {
            // One dispose scope per layer: temporaries' handles go at the end of each layer, not of the pass.
            var input = h;
            h = ActScope.Run(() =>
            {
                var attended = SelfAttention(ops, input, bias, layer);
                var mid = ops.LayerNorm(ops.Add(attended, input), layer.AttentionNormWeight, layer.AttentionNormBias, Config.LayerNormEps);
                var inner = ops.Apply(ops.Linear(mid, layer.Intermediate, layer.IntermediateBias), activation);
                var ffn = ops.Linear(inner, layer.Output, layer.OutputBias);
                return ops.LayerNorm(ops.Add(ffn, mid), layer.OutputNormWeight, layer.OutputNormBias, Config.LayerNormEps);
            });
        }
        return h;
    }

    /// <summary>Logits [B, C] (or the pooled embedding [B, H] for a bare encoder without a classifier).</summary>
    public Act Forward(TensorOps ops, Act wordEmbeddings, Tensor attentionMask, Tensor? positionIds = null)
    {
        var h = Encode(ops, wordEmbeddings, attentionMask, positionIds);
        switch (Config.Head)
        {
            case HeadKind.BertPooler:
            {
                var first = ops.Map(h, t => t.select(1, 0));
                var pooled = ops.Apply(ops.Linear(first, HeadDense!, HeadDenseBias), Activation.Tanh);
                return ops.Linear(pooled, Classifier!, ClassifierBias);
            }
            case HeadKind.DistilBertPreClassifier:
            {
                var first = ops.Map(h, t => t.select(1, 0));
                var pre = ops.Apply(ops.Linear(first, HeadDense!, HeadDenseBias), Activation.Relu);
                return ops.Linear(pre, Classifier!, ClassifierBias);
            }
            case HeadKind.RobertaClassificationHead:
            {
                var first = ops.Map(h, t => t.select(1, 0));
                var dense = ops.Apply(ops.Linear(first, HeadDense!, HeadDenseBias), Activation.Tanh);
                return ops.Linear(dense, Classifier!, ClassifierBias);
            }
            case HeadKind.MeanPooling:
            {
                // Masked mean over tokens: linear in h, the mask is a constant.
                var m = attentionMask.to_type(DType).unsqueeze(-1);
                var count = m.sum(1).clamp_min(1);
                var pooled = ops.Map(h, t => (t * m).sum(1) / count);
                return Classifier is null ? pooled : ops.Linear(pooled, Classifier, ClassifierBias);
            }
            default:
                throw new InvalidOperationException($"Unknown head {Config.Head}");
        }
    }

    /// <summary>Plain inference: logits for token ids, without autograd.</summary>
    public Tensor Logits(Tensor ids, Tensor attentionMask)
    {
        using var _ = no_grad();
        return Forward(PlainOps.Instance, new Act(WordEmbeddings(ids)), attentionMask).X;
    }

    private Act SelfAttention(TensorOps ops, Act h, Tensor? bias, EncoderLayerWeights w)
    {
        int heads = Config.Heads;
        long headDim = Config.HiddenSize / heads;
        Tensor SplitHeads(Tensor t) => t.reshape(t.shape[0], t.shape[1], heads, headDim).transpose(1, 2);
        long hidden = Config.HiddenSize;
        var qkv = ops.Linear(h, w.Qkv!, w.QkvBias);
        var q = ops.Map(qkv, t => SplitHeads(t.narrow(-1, 0, hidden)));
        var k = ops.Map(qkv, t => SplitHeads(t.narrow(-1, hidden, hidden)));
        var v = ops.Map(qkv, t => SplitHeads(t.narrow(-1, 2 * hidden, hidden)));
        var attended = ops.Attention(q, k, v, bias, 1.0 / Math.Sqrt(headDim));
        var context = ops.Map(attended, t => t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1));
        return ops.Linear(context, w.AttentionOut, w.AttentionOutBias);
    }

    public static Activation ActivationFor(string hiddenAct) => hiddenAct switch
    {
        "gelu" => Activation.GeluErf,
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluTanh,
        "relu" => Activation.Relu,
        "tanh" => Activation.Tanh,
        _ => throw new ModelLoadException($"Unsupported hidden_act '{hiddenAct}' (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, tanh)", field: "hidden_act"),
    };

    /// <summary>Frees the weights; a model made by <see cref="WithClassifier"/> frees only its own head.</summary>
    public void Dispose()
    {
        Classifier?.Dispose();
        ClassifierBias?.Dispose();
        if (!_ownsEncoder) return;
        WordEmbeddingTable.Dispose();
        PositionEmbeddings.Dispose();
        TokenTypeEmbeddings?.Dispose();
        EmbeddingNormWeight.Dispose();
        EmbeddingNormBias.Dispose();
        foreach (var l in Layers)
        {
            l.Convert(t => { t.Dispose(); return t; });
            l.Qkv?.Dispose();
            l.QkvBias?.Dispose();
        }
        HeadDense?.Dispose();
        HeadDenseBias?.Dispose();
    }
}
