using static TorchSharp.torch;

namespace AttributionFleet.Engine.Ops;

/// <summary>
/// The one abstraction the model code calls its ops through. Linear (and affine) ops are the same
/// whatever the mode: they apply one map to the input half and, without autograd, to the reference
/// half; for them the DeepLift multiplier is the Jacobian itself. Nonlinear ops are abstract:
/// <see cref="PlainOps"/> runs plain torch (prediction, gradients for IG/saliency), the DeepLift ops
/// apply the exact rules. A rule never knows which model calls it; a model never knows which ops run it.
/// </summary>
public abstract class TensorOps
{
    /// <summary>A linear or affine map applied to both halves (reshape, transpose, select, scale, add a constant).</summary>
    public Act Map(Act a, Func<Tensor, Tensor> f)
    {
        if (a.IsReferenceOnly)
            using (no_grad()) return Act.ReferenceOnly(f(a.R!));
        var x = f(a.X);
        Tensor? r = null;
        if (a.R is not null)
            using (no_grad()) r = f(a.R);
        return new Act(x, r);
    }

    /// <summary>A map that is linear in both arguments jointly (sum, difference).</summary>
    public Act Map(Act a, Act b, Func<Tensor, Tensor, Tensor> f)
    {
        if (a.IsReferenceOnly && b.IsReferenceOnly)
            using (no_grad()) return Act.ReferenceOnly(f(a.R!, b.R!));
        var x = f(a.X, b.X);
        Tensor? r = null;
        if (a.R is not null && b.R is not null)
            using (no_grad()) r = f(a.R, b.R);
        else if (a.R is not null || b.R is not null)
            throw new InvalidOperationException("Both operands need a reference activation, or neither.");
        return new Act(x, r);
    }

    /// <summary><c>y = x Wᵀ + b</c>: linear; the bias cancels in <c>y - y0</c>. (Virtual so a profiler can time it.)</summary>
    public virtual Act Linear(Act a, Tensor weight, Tensor? bias) =>
        Map(a, t => nn.functional.linear(t, weight, bias));

    public Act Add(Act a, Act b) => Map(a, b, (x, y) => x + y);

    /// <summary>
    /// Whether a model may run its position-wise layers on the real tokens only (<see cref="TokenPacking"/>). Only ops
    /// that know where each token's reference is in that layout say yes: the tape replay of a batch of several lengths.
    /// </summary>
    public virtual bool PacksTokens => false;

    public abstract Act Apply(Act a, Activation activation);

    /// <summary>Softmax along <paramref name="dim"/>.</summary>
    public abstract Act Softmax(Act a, long dim);

    /// <summary>LayerNorm over the last dimension: <c>γ (x − mean) / sqrt(var + eps) + β</c>.</summary>
    public abstract Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps);

    /// <summary>Bilinear product <c>A @ B</c> (attention scores and context).</summary>
    public abstract Act MatMul(Act a, Act b);

    /// <summary>Elementwise product.</summary>
    public abstract Act Mul(Act a, Act b);

    /// <summary>
    /// Scaled dot-product attention <c>softmax(q kᵀ · scale + bias) v</c> over [B, heads, L, d] tensors, composed of
    /// the ops above (so the DeepLift rules apply to each product and to the softmax). Plain ops use libtorch's
    /// fused kernel instead.
    /// </summary>
    public virtual Act Attention(Act q, Act k, Act v, Tensor? bias, double scale)
    {
        var scores = Map(MatMul(q, Map(k, t => t.transpose(-1, -2))), t => bias is null ? t * scale : t * scale + bias);
        return MatMul(Softmax(scores, -1), v);
    }
}

/// <summary>Plain torch: what the model computes. Used to predict and for gradient-based methods.</summary>
public sealed class PlainOps : TensorOps
{
    public static readonly PlainOps Instance = new();

    public override Act Apply(Act a, Activation activation) => Map(a, t => Plain(t, activation));

    public static Tensor Plain(Tensor t, Activation activation) => activation switch
    {
        Activation.GeluErf => nn.functional.gelu(t),
        Activation.GeluTanh => GeluTanh(t),
        Activation.Relu => nn.functional.relu(t),
        Activation.Tanh => t.tanh(),
        Activation.Sigmoid => t.sigmoid(),
        _ => throw new ArgumentOutOfRangeException(nameof(activation)),
    };

    /// <summary>HF's gelu_new / gelu_pytorch_tanh: <c>0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))</c>.</summary>
    public static Tensor GeluTanh(Tensor x) =>
        0.5 * x * (1 + (Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x.pow(3))).tanh());

    public override Act Softmax(Act a, long dim) => Map(a, t => t.softmax(dim));

    public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps) =>
        Map(a, t => nn.functional.layer_norm(t, new[] { t.shape[^1] }, weight, bias, eps));

    public override Act MatMul(Act a, Act b) => Map(a, b, (x, y) => x.matmul(y));

    public override Act Mul(Act a, Act b) => Map(a, b, (x, y) => x * y);

    public override Act Attention(Act q, Act k, Act v, Tensor? bias, double scale)
    {
        // The fused kernel scales by 1/sqrt(d); fold any other scale into q.
        double fused = 1.0 / Math.Sqrt(q.X.shape[^1]);
        var query = Math.Abs(scale - fused) <= 1e-15 * fused ? q.X : q.X * (scale / fused);
        return new Act(nn.functional.scaled_dot_product_attention(query, k.X, v.X, bias));
    }
}
