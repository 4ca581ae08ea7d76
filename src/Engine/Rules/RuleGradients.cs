using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// Autograd nodes for the rules. A rule has already computed its value (and the reference half's) without autograd;
/// these nodes attach it to the graph with the rule's multipliers as its gradient, so the forward pass does no
/// work for autograd beyond saving the multipliers. (The equivalent straight-through form
/// <c>y.detach() + m · (x − x.detach())</c> costs three extra elementwise passes over every activation, and the
/// product rule's form <c>(A − A.detach()) @ B̄</c> a whole extra matmul per operand.)
/// </summary>
public static class RuleGradients
{
    /// <summary>The value <paramref name="value"/> (computed without autograd) with gradient <c>grad · m</c> to <paramref name="x"/>.</summary>
    internal static Tensor WithMultiplier(Tensor value, Tensor x, Tensor m) =>
        x.requires_grad ? MultiplierNode.apply(x, new Held(value, m, null)) : value;

    /// <summary>
    /// The product <paramref name="value"/> = <c>a ⊙ b</c> (or <c>a @ b</c>) with the symmetric rule's gradients:
    /// <c>∂/∂a = grad ⊙ b̄</c> (<c>grad @ b̄ᵀ</c>), <c>∂/∂b = grad ⊙ ā</c> (<c>āᵀ @ grad</c>), summed back to each operand's shape
    /// where it was broadcast.
    /// </summary>
    internal static Tensor WithProductMultipliers(Tensor value, Tensor a, Tensor b, Tensor? aMean, Tensor? bMean, bool matmul)
    {
        if (!a.requires_grad && !b.requires_grad) return value;
        return ProductNode.apply(a, b, new Held(value, bMean, aMean) { MatMul = matmul });
    }

    /// <summary>
    /// The softmax <paramref name="value"/> of the exact rule computed in one loop (<see cref="CpuKernels.TrySoftmaxExact"/>),
    /// with the gradient of its chain <c>y = exp ℓ, ℓ = u − log Σ exp u, u = x − c</c>: with <c>t = grad ⊙ m_y</c>,
    /// <c>∂/∂x = t − m_e ⊙ (m_g · Σ_d t)</c> (the exp rule's multiplier on ℓ, the sum's broadcast back through the log rule's
    /// and the first exp rule's, and ℓ's direct path from u).
    /// </summary>
    internal static Tensor WithSoftmaxMultipliers(Tensor value, Tensor x, Tensor mExp, Tensor mLog, Tensor mOut) =>
        x.requires_grad ? SoftmaxNode.apply(x, new Held(value, mExp, mOut) { Third = mLog }) : value;

    /// <summary>Carries tensors into a node's forward without making them inputs of the node.</summary>
    private sealed record Held(Tensor Value, Tensor? First, Tensor? Second)
    {
        public bool MatMul { get; init; }
        public Tensor? Third { get; init; }
    }

    private sealed class SoftmaxNode : autograd.SingleTensorFunction<SoftmaxNode>
    {
        public override string Name => "DeepLiftSoftmax";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var held = (Held)vars[1];
            ctx.save_for_backward(new() { held.First!, held.Third!, held.Second! });
            return held.Value.detach();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var saved = ctx.get_saved_variables(); // m_e, m_g, m_y
            var t = grad * saved[2];
            using (var sum = t.sum(-1, keepdim: true))
            {
                sum.mul_(saved[1]);
                using var spread = saved[0] * sum;
                t.sub_(spread); // t becomes ∂/∂x: every temporary here is released before the next node runs
            }
            return Hand(grad, saved, t);
        }
    }

    private sealed class MultiplierNode : autograd.SingleTensorFunction<MultiplierNode>
    {
        public override string Name => "DeepLiftMultiplier";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var held = (Held)vars[1];
            ctx.save_for_backward(new() { held.First! });
            return held.Value.detach(); // a new handle on the same storage: the caller's tensor keeps no history
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var saved = ctx.get_saved_variables();
            return Hand(grad, saved, grad * saved[0]);
        }
    }

    private sealed class ProductNode : autograd.SingleTensorFunction<ProductNode>
    {
        public override string Name => "DeepLiftProduct";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var a = (Tensor)vars[0];
            var b = (Tensor)vars[1];
            var held = (Held)vars[2];
            // Save only what a needed gradient reads: b̄ for a's, ā for b's.
            ctx.save_for_backward(new() { a.requires_grad ? held.First! : empty(0), b.requires_grad ? held.Second! : empty(0) });
            ctx.save_data("a", a.requires_grad ? a.shape : Array.Empty<long>());
            ctx.save_data("b", b.requires_grad ? b.shape : Array.Empty<long>());
            ctx.save_data("matmul", held.MatMul);
            return held.Value.detach(); // a new handle on the same storage: the caller's tensor keeps no history
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
        {
            var saved = ctx.get_saved_variables();
            bool matmul = (bool)ctx.get_data("matmul");
            Tensor? ga = null, gb = null;
            if (ctx.get_data("a") is long[] { Length: > 0 } aShape)
                ga = SumTo(matmul ? grad.matmul(saved[0].transpose(-1, -2)) : grad * saved[0], aShape);
            if (ctx.get_data("b") is long[] { Length: > 0 } bShape)
                gb = SumTo(matmul ? saved[1].transpose(-1, -2).matmul(grad) : grad * saved[1], bShape);
            return Hand(grad, saved, ga, gb);
        }
    }

    [ThreadStatic] private static List<Tensor>? _handed;

    /// <summary>
    /// Returns a node's gradients to autograd and lets go of every managed handle the call created. TorchSharp wraps
    /// the incoming gradient and each unpacked saved tensor in a new handle, and the backward runs inside the
    /// caller's dispose scope, so without this every gradient and multiplier of the pass would stay alive until the
    /// pass ends (measured: +1.1 GB for 8 × 128 on 12 layers). The returned gradients are released at the next
    /// node's call, when autograd has taken its own reference, or by <see cref="ReleaseHanded"/>.
    /// </summary>
    private static List<Tensor> Hand(Tensor grad, List<Tensor> saved, params Tensor?[] gradients)
    {
        ReleaseHanded();
        grad.Dispose();
        foreach (var t in saved) t.Dispose();
        _handed ??= new();
        _handed.AddRange(gradients.OfType<Tensor>());
        return gradients.Append(null).ToList()!; // the last input is the Held carrier: no gradient
    }

    /// <summary>Releases the handles of the gradients the last node returned (autograd holds its own references).</summary>
    public static void ReleaseHanded()
    {
        if (_handed is null) return;
        foreach (var t in _handed) t.Dispose();
        _handed.Clear();
    }

    /// <summary>Sums a broadcast gradient back to the operand's shape (leading dims added, size-1 dims expanded).</summary>
    internal static Tensor SumTo(Tensor t, long[] shape)
    {
        if (t.shape.SequenceEqual(shape)) return t;
        int lead = t.shape.Length - shape.Length;
        if (lead > 0) t = t.sum(Enumerable.Range(0, lead).Select(i => (long)i).ToArray());
        var dims = Enumerable.Range(0, shape.Length).Where(i => shape[i] == 1 && t.shape[i] != 1).Select(i => (long)i).ToArray();
        return dims.Length > 0 ? t.sum(dims, keepdim: true) : t;
    }
}
