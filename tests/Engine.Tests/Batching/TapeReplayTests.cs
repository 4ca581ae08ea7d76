using AttributionFleet.Engine.Attribution;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Batching;

/// <summary>
/// A pass of several lengths gets each group's tape activation padded to its width in one tensor (one row per group for
/// the fused loops, or copied out to every row for the other rules). It must hold exactly what padding each tape alone
/// holds: zeros past each length, finfo.min along a softmax's own dimension (masked keys) over them.
/// </summary>
public class TapeReplayTests
{
    private static readonly long[] Rows = { 2, 1, 3 };
    private static readonly int[] Lengths = { 5, 3, 7 };
    private const long Width = 7;

    private static TapeReplayOps Replay(Func<int, Tensor> activation)
    {
        var tapes = Lengths.Select((l, g) => new ReferenceTape(new List<Tensor[]> { new[] { activation(l) } }, zeros(1, 2))).ToList();
        return new TapeReplayOps(new DeepLiftOps(), tapes, Rows, Lengths, Width);
    }

    /// <summary>What each tape padded alone gives (nn.functional.pad: zeros on the other dimensions, then finfo.min on the softmax's).</summary>
    private static Tensor PaddedAlone(Tensor tape, int length, long? softmaxDim)
    {
        long pad = Width - length;
        var padded = tape;
        for (long dim = 1; dim < tape.dim(); dim++)
        {
            if (tape.shape[dim] != length || dim == softmaxDim) continue;
            var pads = new long[2 * tape.dim()];
            pads[2 * (tape.dim() - 1 - dim) + 1] = pad;
            padded = nn.functional.pad(padded, pads);
        }
        if (softmaxDim is long d && tape.shape[d] == length)
        {
            var pads = new long[2 * tape.dim()];
            pads[2 * (tape.dim() - 1 - d) + 1] = pad;
            padded = nn.functional.pad(padded, pads, value: finfo(tape.dtype).min);
        }
        return padded;
    }

    [Theory]
    [InlineData(true)]  // scores before a softmax [1, heads, l, l]: queries pad with 0, keys with finfo.min
    [InlineData(false)] // an activation [1, l, hidden]
    public void GroupsOfSeveralLengthsAssembleAsEachTapePaddedAlone(bool scores)
    {
        var gen = new TorchSharp.torch.Generator(3);
        var inputs = Lengths.Select(l => scores ? randn(new long[] { 1, 2, l, l }, generator: gen) : randn(new long[] { 1, l, 4 }, generator: gen)).ToArray();
        int g0 = 0;
        var replay = Replay(l => inputs[g0++]);
        var x = scores ? zeros(6, 2, Width, Width) : zeros(6, Width, 4);
        long? softmaxDim = scores ? 3 : null;

        var expected = cat(inputs.Select((t, g) => PaddedAlone(t, Lengths[g], softmaxDim)).ToArray(), 0);
        var groupOfRow = tensor(new long[] { 0, 0, 1, 2, 2, 2 });
        var perRow = replay.Assemble(0, 0, x, scores ? -1 : null);
        Assert.True((perRow == expected.index_select(0, groupOfRow)).all().item<bool>(), "copied out to every row");
        if (scores) Assert.Equal(finfo(ScalarType.Float32).min, perRow[0, 0, 6, 6].item<float>()); // a padded query's padded key

        // One group: its tape as one row, padded the same way, broadcast over the batch; the tape itself where it needs none.
        var single = new TapeReplayOps(new DeepLiftOps(), new[] { new ReferenceTape(new List<Tensor[]> { new[] { inputs[0] } }, zeros(1, 2)) },
            new long[] { 6 }, new[] { Lengths[0] }, Width);
        var row = single.Assemble(0, 0, x, scores ? -1 : null);
        Assert.Equal(new long[] { 1 }.Concat(x.shape.Skip(1)), row.shape);
        Assert.True((row == expected[..1]).all().item<bool>(), "one group, padded");
        var full = new TapeReplayOps(new DeepLiftOps(), new[] { new ReferenceTape(new List<Tensor[]> { new[] { inputs[2] } }, zeros(1, 2)) },
            new long[] { 6 }, new[] { Lengths[2] }, Width);
        Assert.Same(inputs[2], full.Assemble(0, 0, x, scores ? -1 : null));
    }

    [Theory]
    [InlineData(true)]  // attention probabilities [1, heads, l, l], as P @ V gets them
    [InlineData(false)] // keys transposed [1, heads, d, l], as Q @ Kᵀ gets them: a strided view, on the tape and in the pass
    public void TheProductsMeansEqualEachRowAgainstItsTapeCopiedOut(bool probabilities)
    {
        var gen = new TorchSharp.torch.Generator(5);
        Tensor Shaped(long rows, long l) => probabilities ? randn(new long[] { rows, 2, l, l }, generator: gen) : randn(new long[] { rows, 2, l, 3 }, generator: gen).transpose(2, 3);
        var inputs = Lengths.Select(l => Shaped(1, l)).ToArray();
        int g0 = 0;
        var replay = Replay(l => inputs[g0++]);
        var x = Shaped(6, Width);

        var halfSum = replay.HalfSum(0, 0, x);
        var copiedOut = (x + replay.Assemble(0, 0, x, null)) * 0.5;
        Assert.Equal(copiedOut.shape, halfSum.shape);
        Assert.True((halfSum == copiedOut).all().item<bool>(), "x/2 + x0/2 rounds as (x + x0)/2");
        // A padded position has a reference of 0: its mean is x/2 there.
        var padded = probabilities ? halfSum[2, .., 4, ..] : halfSum[2, .., .., 4]; // row 2: the second group, of length 3
        var half = probabilities ? x[2, .., 4, ..] * 0.5 : x[2, .., .., 4] * 0.5;
        Assert.True((padded == half).all().item<bool>());
        Assert.False(x.requires_grad || halfSum.requires_grad);
    }

    [Fact]
    public void ATapeOfAnotherLengthIsRefused()
    {
        var replay = Replay(l => randn(1, l + 1, 4)); // one token more than its group's length
        var error = Assert.Throws<InvalidOperationException>(() => replay.Assemble(0, 0, zeros(6, Width, 4), null));
        Assert.Contains("does not fit", error.Message);
        error = Assert.Throws<InvalidOperationException>(() => replay.HalfSum(0, 0, zeros(6, Width, 4)));
        Assert.Contains("does not fit", error.Message);
    }
}
