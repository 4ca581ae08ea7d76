using AttributionFleet.Engine.Ops;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Batching;

/// <summary>
/// Packing a right-padded batch's real tokens [B, W, …] → [1, N, …] and back: text by text, positions in order, zeros at
/// the padding on the way back; only for ops that ask for it, only for a batch that has padding and only for prefix masks.
/// </summary>
public class TokenPackingTests
{
    /// <summary>Ops that ask for packing, as the tape replay of several lengths does.</summary>
    private sealed class PackingOps : TensorOps
    {
        public override bool PacksTokens => true;
        public override Act Apply(Act a, Activation activation) => throw new NotSupportedException();
        public override Act Softmax(Act a, long dim) => throw new NotSupportedException();
        public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps) => throw new NotSupportedException();
        public override Act MatMul(Act a, Act b) => throw new NotSupportedException();
        public override Act Mul(Act a, Act b) => throw new NotSupportedException();
    }

    private static Tensor Mask(params long[] lengths)
    {
        long width = lengths.Max();
        return (arange(width).unsqueeze(0) < tensor(lengths).unsqueeze(1)).to_type(ScalarType.Int64);
    }

    [Fact]
    public void PacksEachTextsTokensInOrderAndPadsWithZerosOnTheWayBack()
    {
        var mask = Mask(5, 3, 3, 1);
        var packing = TokenPacking.For(new PackingOps(), mask);
        Assert.NotNull(packing);
        Assert.Equal(new long[] { 5, 3, 3, 1 }, packing!.Lengths);
        Assert.Equal(12, packing.Tokens);
        var x = arange(4 * 5 * 2, dtype: ScalarType.Float64).reshape(4, 5, 2);
        var packed = packing.Pack(x);
        Assert.Equal(new long[] { 1, 12, 2 }, packed.shape);
        var expected = cat(new[] { x[0, ..5], x[1, ..3], x[2, ..3], x[3, ..1] }, 0).unsqueeze(0);
        Assert.True(packed.eq(expected).all().item<bool>());
        var back = packing.Unpack(packed);
        Assert.Equal(x.shape, back.shape);
        var keep = mask.unsqueeze(2).to_type(ScalarType.Float64);
        Assert.Equal(0, (back - x * keep).abs().max().item<double>());
        Assert.Throws<InvalidOperationException>(() => packing.Unpack(x)); // a padded tensor is not a packed one
    }

    [Fact]
    public void LeavesBatchesItCannotOrNeedNotPackPadded()
    {
        Assert.Null(TokenPacking.For(PlainOps.Instance, Mask(5, 3))); // ops that do not ask
        Assert.Null(TokenPacking.For(new PackingOps(), Mask(4, 4))); // no padding
        var leftPadded = tensor(new long[,] { { 1, 1, 1 }, { 0, 1, 1 } });
        Assert.Null(TokenPacking.For(new PackingOps(), leftPadded)); // real tokens not first
        TokenPacking.Enabled = false;
        try { Assert.Null(TokenPacking.For(new PackingOps(), Mask(5, 3))); }
        finally { TokenPacking.Enabled = true; }
    }
}
