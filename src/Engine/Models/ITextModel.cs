using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Models;

/// <summary>
/// What methods, the explainer and the CLI depend on: a text model whose input is attributed at its word
/// embeddings and whose every op after them goes through <see cref="TensorOps"/> (so the same forward predicts with
/// plain ops and attributes with DeepLift's rules). Each architecture (src/Engine/Architectures/&lt;Family&gt;) provides
/// one; the rules never know which.
/// </summary>
public interface ITextModel : IDisposable
{
    ModelConfig Config { get; }
    ScalarType DType { get; }
    Device Device { get; }

    /// <summary>Number of outputs: labels (or regression values) of a head; the pooled width of a bare encoder.</summary>
    int OutputSize { get; }

    /// <summary>What the outputs mean (softmax, independent sigmoids, values, or an embedding).</summary>
    ProblemType Problem { get; }

    /// <summary>True when the outputs are a head's (labels or values), false for a bare encoder's pooled embedding.</summary>
    bool HasClassifier { get; }

    /// <summary>Word-embedding lookup [B, L, E]: the point where attributions are taken.</summary>
    Tensor WordEmbeddings(Tensor ids);

    /// <summary>The encoder's last hidden state [B, L, H].</summary>
    Act Encode(TensorOps ops, Act wordEmbeddings, Tensor attentionMask);

    /// <summary>The head's outputs [B, C] (logits or values; the pooled embedding [B, H] for a bare encoder).</summary>
    Act Forward(TensorOps ops, Act wordEmbeddings, Tensor attentionMask);

    /// <summary>Plain inference: <see cref="Forward"/> for token ids, without autograd.</summary>
    Tensor Logits(Tensor ids, Tensor attentionMask);

    /// <summary>A copy in another precision and/or on another device (the weights are converted once).</summary>
    ITextModel To(ScalarType dtype, Device? device = null);

    /// <summary>The same encoder (weights shared, not copied) with a linear classifier on its pooled output (bare encoders).</summary>
    ITextModel WithClassifier(Tensor weight, Tensor bias, IReadOnlyList<string> labels);

    /// <summary>The weights by role (see the architecture's <see cref="Architectures.WeightTable"/>), for writing checkpoints.</summary>
    IReadOnlyDictionary<string, Tensor> Weights { get; }

    /// <summary>
    /// What one text's DeepLift pass keeps, relative to <see cref="Attribution.DeepLift.BytesPerText"/>'s count for a
    /// BERT layer of the same sizes (1 for the BERT-bodied families): a family with more rule steps per layer (relative
    /// positions, gated MLPs) says how many more, as measured, so that passes still fit the memory budget.
    /// </summary>
    double DeepLiftMemoryScale => 1.0;
}
