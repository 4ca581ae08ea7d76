using AttributionFleet.Engine.Rules;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>What scalar of the model is explained.</summary>
public enum OutputKind
{
    /// <summary>The raw logit <c>z_c</c>.</summary>
    Logit,
    /// <summary><c>z_c − mean_k z_k</c>: softmax-invariant; Shrikumar et al.'s softmax normalization done right (default).</summary>
    CenteredLogit,
    /// <summary><c>softmax(z)_c</c>, with the final softmax under the softmax rule.</summary>
    Probability,
    /// <summary><c>sigmoid(z_c)</c>: a multi-label head's probability of label c (one logit under the rescale rule).</summary>
    SigmoidProbability,
}

/// <summary>
/// Working precision of a pass. The half precisions exist for GPU images: their multipliers are computed in
/// float32 and their (larger) delta is reported like any other, never hidden.
/// </summary>
public enum Precision { Float32, Float64, Float16, BFloat16 }

/// <summary>Quadrature for Integrated Gradients.</summary>
public enum IntegrationRule { GaussLegendre, RiemannTrapezoid }

/// <summary>A request was malformed: <see cref="Field"/> names the offending field.</summary>
public sealed class AttributionRequestException : Exception
{
    public string Field { get; }
    public AttributionRequestException(string field, string message) : base(message) => Field = field;
}

/// <summary>
/// A batch to explain, at the word-embedding level. <see cref="ReferenceEmbeddings"/> has batch size B or 1
/// (one reference shared by every text, e.g. all texts of one length with the [PAD] reference).
/// <see cref="Targets"/> null: each text's predicted class (argmax of f(x)), taken by the method from a forward pass
/// at x it runs anyway (DeepLift's own pass), so explaining the prediction costs no extra forward.
/// </summary>
public sealed record AttributionBatch(Tensor Ids, Tensor AttentionMask, IReadOnlyList<Tensor> ReferenceEmbeddings, long[]? Targets)
{
    public long Size => Ids.shape[0];

    /// <summary>Texts of several lengths in one padded batch, each length against its own one-row reference (DeepLift, DeepLiftShap).</summary>
    public ReferenceGroups? Groups { get; init; }
}

/// <summary>Options shared by the methods.</summary>
public sealed record MethodOptions
{
    public OutputKind Output { get; init; } = OutputKind.CenteredLogit;
    public SoftmaxRuleKind SoftmaxRule { get; init; } = SoftmaxRuleKind.Exact;
    /// <summary>Integrated Gradients / GradientSHAP path points.</summary>
    public int Steps { get; init; } = 50;
    public IntegrationRule Integration { get; init; } = IntegrationRule.GaussLegendre;
    /// <summary>
    /// Largest number of rows per forward/backward: (text × step) rows in IG and GradientSHAP, texts in DeepLift and
    /// DeepLiftShap. Bounds peak memory; results do not depend on it.
    /// </summary>
    public int MaxRowsPerPass { get; init; } = 64;
    /// <summary>
    /// DeepLift and DeepLiftShap: the memory one pass may take (its texts by <see cref="DeepLift.BytesPerText"/>); null:
    /// <see cref="DefaultPassMemoryBytes"/> for the model's device. On the CPU, 1 GiB: up to 9 bert-base texts of 128
    /// tokens a pass (a batch of 16 goes as 8 + 8: process peak 1.6 GB), 52 of 32 tokens. On an accelerator, 16 GiB:
    /// there the pass should be as large as the batch (the time is in kernel launches, not in bytes).
    /// </summary>
    public long? PassMemoryBytes { get; init; }

    public static long DefaultPassMemoryBytes(TorchSharp.DeviceType device) => device == TorchSharp.DeviceType.CPU ? 1L << 30 : 16L << 30;
    /// <summary>GradientSHAP: samples per text and the noise added to each.</summary>
    public int Samples { get; init; } = 20;
    public double NoiseStdDev { get; init; } = 0.0;
    public int Seed { get; init; } = 0;
    /// <summary>Compute float32 rescale multipliers in float64 (recommended by the design note).</summary>
    public bool PromoteMultipliers { get; init; } = true;
    /// <summary>DeepLift: where reference tapes of grouped batches are kept (<see cref="Attribution.ReferenceCache.Shared"/> by default); null records each once per pass.</summary>
    public ReferenceCache? ReferenceCache { get; init; } = Attribution.ReferenceCache.Shared;
}

/// <summary>
/// Per-token contributions of one batch. <see cref="Attributions"/> [B, L, H], <see cref="Scores"/> [B, L]
/// (summed over the hidden dimension), <see cref="Fx"/>, <see cref="Fx0"/>, <see cref="Delta"/> [B] with
/// <c>delta = f(x) − f(x0) − Σ scores</c>; <see cref="Logits"/> [B, C]: the model's whole output at x (for the
/// reported prediction); <see cref="Targets"/>: the class explained for each text. Tensors float64 on the CPU.
/// </summary>
public sealed record AttributionOutput(Tensor Attributions, Tensor Scores, Tensor Fx, Tensor Fx0, Tensor Delta, Tensor Logits, long[] Targets)
{
    /// <summary>
    /// [B, C]: the model's whole output at each text's reference, where the method computed it against one reference
    /// (DeepLift: the reference half of its own pass, or its tape); null otherwise. The reference check reads it instead
    /// of running a forward of its own per length.
    /// </summary>
    public Tensor? ReferenceLogits { get; init; }
}

/// <summary>One attribution method, one entry point.</summary>
public interface IAttributionMethod
{
    string Name { get; }
    AttributionOutput Attribute(Models.ITextModel model, AttributionBatch batch, MethodOptions options);
}
