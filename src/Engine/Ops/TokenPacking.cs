using static TorchSharp.torch;

namespace AttributionFleet.Engine.Ops;

/// <summary>
/// A right-padded batch's real tokens one after another: [B, W, …] to [1, N, …] (text by text, each text's positions in
/// order; N the batch's real tokens) and back. A model runs its position-wise layers (the linear maps, the FFN, the
/// LayerNorms) packed and pads only for attention, so the padding's share of a mixed-length batch costs nothing there:
/// the linear maps are most of a layer's work (~24 H² multiply-adds a token against ~4 W H in attention), and a gather
/// or a scatter of the tokens at 768 wide costs about 1 % of one 768 → 3072 map on them (0.14–0.16 ms and 0.25–0.28 ms
/// against 19–22 ms, 528 tokens of 564, two threads). Both are linear maps (a selection and its transpose), so the DeepLift
/// multipliers pass through them as through any linear map, and the real tokens' values are those of the padded batch
/// (padded keys are masked, padded queries discarded).
/// </summary>
public sealed class TokenPacking
{
    private readonly Tensor _index;
    private readonly long _rows, _width;

    private TokenPacking(Tensor index, long rows, long width, long[] lengths)
    {
        _index = index;
        _rows = rows;
        _width = width;
        Lengths = lengths;
    }

    /// <summary>Off (on the calling thread) for tests and benchmarks, to compare with the padded layout.</summary>
    public static bool Enabled { get => !_disabled; set => _disabled = !value; }
    [ThreadStatic] private static bool _disabled;

    /// <summary>Passes that ran packed on the calling thread (tests check that the packed path is the one taken).</summary>
    public static long Passes => _passes;
    [ThreadStatic] private static long _passes;

    /// <summary>Each text's real tokens (its mask's ones), in batch order.</summary>
    public long[] Lengths { get; }

    /// <summary>Real tokens in the batch (N).</summary>
    public long Tokens => _index.shape[0];

    /// <summary>
    /// The packing of <paramref name="attentionMask"/> [B, W] when <paramref name="ops"/> asks for it (<see cref="TensorOps.PacksTokens"/>)
    /// and the batch has padding; null otherwise, and for a mask whose ones are not each row's first positions (a left-
    /// padded batch stays padded).
    /// </summary>
    public static TokenPacking? For(TensorOps ops, Tensor attentionMask)
    {
        if (!Enabled || !ops.PacksTokens || attentionMask.dim() != 2) return null;
        using var scope = NewDisposeScope();
        var mask = attentionMask.to_type(ScalarType.Bool);
        if (mask.all().item<bool>()) return null;
        var lengths = mask.sum(1, type: ScalarType.Int64);
        long width = mask.shape[1];
        var prefix = arange(width, device: mask.device).unsqueeze(0) < lengths.unsqueeze(1);
        if (!prefix.eq(mask).all().item<bool>()) return null;
        var index = mask.reshape(-1).nonzero().squeeze(1);
        _passes++;
        return new TokenPacking(index.MoveToOuterDisposeScope(), mask.shape[0], width, lengths.cpu().data<long>().ToArray());
    }

    /// <summary>[B, W, …] to [1, N, …].</summary>
    public Tensor Pack(Tensor t)
    {
        CheckRows(t, _rows, _width);
        return t.reshape(Flat(t, _rows * _width)).index_select(0, _index).unsqueeze(0);
    }

    /// <summary>[1, N, …] to [B, W, …], zeros at the padding.</summary>
    public Tensor Unpack(Tensor t)
    {
        CheckRows(t, 1, Tokens);
        var flat = Flat(t, _rows * _width);
        var shape = t.shape;
        shape[0] = _rows;
        shape[1] = _width;
        return zeros(flat, t.dtype, device: t.device).index_copy(0, _index, t.squeeze(0)).reshape(shape);
    }

    private static long[] Flat(Tensor t, long rows) => t.shape.Skip(2).Prepend(rows).ToArray();

    private static void CheckRows(Tensor t, long rows, long width)
    {
        if (t.dim() < 2 || t.shape[0] != rows || t.shape[1] != width)
            throw new InvalidOperationException($"token packing expected [{rows}, {width}, …], got [{string.Join(", ", t.shape)}]");
    }
}
