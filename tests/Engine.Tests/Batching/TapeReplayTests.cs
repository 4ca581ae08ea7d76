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
        var compact = replay.Assemble(0, 0, x, scores ? -1 : null, perRow: false);
        var perRow = replay.Assemble(0, 0, x, scores ? -1 : null, perRow: true);
        Assert.Equal(expected.shape, compact.shape);
        Assert.True((compact == expected).all().item<bool>(), "one row per group");
        Assert.True((perRow == expected.index_select(0, groupOfRow)).all().item<bool>(), "copied out to every row");
        if (scores) Assert.Equal(finfo(ScalarType.Float32).min, perRow[0, 0, 6, 6].item<float>()); // a padded query's padded key
    }

    [Fact]
    public void ATapeOfAnotherLengthIsRefused()
    {
        var replay = Replay(l => randn(1, l + 1, 4)); // one token more than its group's length
        var error = Assert.Throws<InvalidOperationException>(() => replay.Assemble(0, 0, zeros(6, Width, 4), null, perRow: true));
        Assert.Contains("does not fit", error.Message);
    }
}
