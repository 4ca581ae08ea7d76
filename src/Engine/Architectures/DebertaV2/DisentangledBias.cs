using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.DebertaV2;

/// <summary>
/// DeBERTa's relative-position attention terms. Each is a fixed linear map of one input-dependent tensor — the tables
/// (<c>Kr</c>, <c>Qr</c>: projections of the relative embeddings, weights only) and the indices (constants of the length)
/// are the same for the input and the reference — so under DeepLift its multiplier is its Jacobian and it conserves
/// exactly (<c>f(q) − f(q0) = J (q − q0)</c>); both go through <see cref="TensorOps.Map(Act, Func{Tensor, Tensor})"/>, no new rule.
/// </summary>
public static class DisentangledBias
{
    /// <summary>
    /// content→position: <c>c2p[b, h, i, j] = q[b, h, i] · Kr[h, c2p_pos(i, j)] / s</c>, as HF computes it:
    /// <c>gather(q Krᵀ, −1, c2p_pos) / s</c>. <paramref name="keys"/>: Kr as [1, heads, R, d]; <paramref name="index"/>: [L, L]
    /// rows of Kr.
    /// </summary>
    public static Act ContentToPosition(TensorOps ops, Act q, Tensor keys, Tensor index, double scale)
    {
        var table = keys.transpose(-1, -2);
        return ops.Map(q, t => t.matmul(table).gather(-1, index.expand(t.shape[0], t.shape[1], index.shape[0], index.shape[1])) / scale);
    }

    /// <summary>
    /// position→content: <c>p2c[b, h, i, j] = k[b, h, j] · Qr[h, p2c_pos(j, i)] / s</c>, as HF computes it:
    /// <c>gather(k Qrᵀ, −1, p2c_pos)ᵀ / s</c> (the gather indexed [key j, query i], then transposed).
    /// </summary>
    public static Act PositionToContent(TensorOps ops, Act k, Tensor queries, Tensor index, double scale)
    {
        var table = queries.transpose(-1, -2);
        return ops.Map(k, t => t.matmul(table).gather(-1, index.expand(t.shape[0], t.shape[1], index.shape[0], index.shape[1])).transpose(-1, -2) / scale);
    }
}
