using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// Fused CPU loops for the rules' elementwise tails, where composing torch ops costs one pass over memory per op.
/// Only where it pays: the promoted secant (GELU) spends most of its composition on float64 passes; a fused exp
/// rule for the softmax, even vectorized, measured no faster than libtorch's vectorized exp passes, so it is not here.
/// Each kernel does exactly the arithmetic of the torch composition it replaces (same operations, same order, same
/// rounding), so results are bit-identical and the torch composition stays as the path for accelerators, other
/// dtypes and layouts (and as the tests' reference).
/// </summary>
public static unsafe partial class CpuKernels
{
    /// <summary>Off (on the calling thread) for tests and <c>fleet bench … --no-kernels</c>, to compare with the torch composition.</summary>
    public static bool Enabled { get => !_disabled; set => _disabled = !value; }
    [ThreadStatic] private static bool _disabled;

    /// <summary>How many times a kernel ran on the calling thread (tests check that the fused path is the one taken).</summary>
    internal static long Runs => _runs;
    [ThreadStatic] private static long _runs;

    /// <summary>How many of those runs took each group's reference at its own length (a padded batch of several lengths).</summary>
    internal static long GroupedRuns => _groupedRuns;
    [ThreadStatic] private static long _groupedRuns;

    private const long Chunk = 1 << 16;

    /// <summary>
    /// The generic rescale tail for float32 activations with float64 values (<see cref="RescaleRule.Apply"/> with
    /// promotion): <c>y = (float) g</c>, <c>m = (float) ((g − g0) / ((double) x − (double) x0))</c>; where
    /// <c>x == x0</c>, <c>m</c> is NaN and counted, for the caller to fill with the derivative. x0 and g0 are either
    /// x's shape or one row shared along the leading dimension. Replaces eight passes (two casts, two differences,
    /// the zero test and its reduction, the division, two casts back) by one.
    /// </summary>
    internal static bool TrySecant(Tensor x, Tensor x0, Tensor g, Tensor g0, out Tensor y, out Tensor m, out long equal)
    {
        y = m = null!;
        equal = 0;
        if (!SecantTakes(x, g) || x0.dtype != ScalarType.Float32 || g0.dtype != ScalarType.Float64 || !x0.is_contiguous() || !g0.is_contiguous()
            || !g0.shape.SequenceEqual(x0.shape) || !ReferenceRowsFit(x.shape, x0.shape))
            return false;
        long rows = x.shape[0], row = rows == 0 ? 1 : x.numel() / rows;
        nint px0 = Address(x0), pg0 = Address(g0);
        var x0Row = new nint[rows];
        var g0Row = new nint[rows];
        var prefix = new long[rows];
        for (long b = 0; b < rows; b++)
        {
            long at = x0.shape[0] == 1 ? 0 : b * row;
            (x0Row[b], g0Row[b], prefix[b]) = (px0 + (nint)(at * sizeof(float)), pg0 + (nint)(at * sizeof(double)), row);
        }
        Secant(x, g, EvenRows(rows, row), x0Row, g0Row, prefix, 0, out y, out m, out equal);
        return true;
    }

    /// <summary>Where each of <paramref name="rows"/> rows of <paramref name="row"/> elements starts, and the end: [rows + 1].</summary>
    private static long[] EvenRows(long rows, long row)
    {
        var start = new long[rows + 1];
        for (long b = 0; b <= rows; b++) start[b] = b * row;
        return start;
    }

    /// <summary>
    /// <see cref="TrySecant"/> for a padded batch of several lengths, against each length's reference as its tape holds
    /// it: group j's x0 and g0 are [1, l_j, …] (x's shape past its first two dimensions, l_j ≤ x's second), row b of x is
    /// taken against group <paramref name="groupOfRow"/>[b]'s, and past l_j positions against the padding's reference:
    /// x0 = 0 and g0 = <paramref name="g0Padding"/> (g(0)). With the positions outermost after the batch, a row's first
    /// l_j · (the rest) elements are its tape's, so nothing is copied or padded: the same arithmetic, on the same numbers,
    /// as against each row's reference padded and copied out to it.
    /// </summary>
    /// <remarks>
    /// Packed (<paramref name="packedLengths"/>: text b's tokens, x [1, N, …] the texts' tokens one after another,
    /// <see cref="Ops.TokenPacking"/>): text b is a row of <c>packedLengths[b]</c> positions, all of them its tape's.
    /// </remarks>
    internal static bool TrySecantGrouped(Tensor x, Tensor g, IReadOnlyList<Tensor> x0, IReadOnlyList<Tensor> g0, double g0Padding, long[] groupOfRow,
        long[]? packedLengths, out Tensor y, out Tensor m, out long equal)
    {
        y = m = null!;
        equal = 0;
        if (!SecantTakes(x, g) || x.dim() < 2 || x0.Count != g0.Count || groupOfRow.Any(j => j < 0 || j >= x0.Count))
            return false;
        if (packedLengths is null ? groupOfRow.Length != x.shape[0] : x.shape[0] != 1 || packedLengths.Length != groupOfRow.Length || packedLengths.Sum() != x.shape[1])
            return false;
        for (int j = 0; j < x0.Count; j++)
            if (x0[j].dtype != ScalarType.Float32 || g0[j].dtype != ScalarType.Float64 || !x0[j].is_contiguous() || !g0[j].is_contiguous()
                || !g0[j].shape.SequenceEqual(x0[j].shape) || !PrefixFits(x.shape, x0[j].shape, packed: packedLengths is not null))
                return false;
        long rows = groupOfRow.Length;
        if (packedLengths is not null && Enumerable.Range(0, (int)rows).Any(b => x0[(int)groupOfRow[b]].shape[1] != packedLengths[b]))
            return false;
        long[] start;
        if (packedLengths is null) start = EvenRows(rows, rows == 0 ? 0 : x.numel() / rows); // a row: its W positions
        else
        {
            long perToken = x.numel() / Math.Max(1, x.shape[1]); // a row: its text's own positions
            start = new long[rows + 1];
            for (long b = 0; b < rows; b++) start[b + 1] = start[b] + packedLengths[b] * perToken;
        }
        var x0Row = new nint[rows];
        var g0Row = new nint[rows];
        var prefix = new long[rows];
        for (long b = 0; b < rows; b++)
        {
            var j = groupOfRow[b];
            (x0Row[b], g0Row[b], prefix[b]) = (Address(x0[(int)j]), Address(g0[(int)j]), x0[(int)j].numel());
        }
        Secant(x, g, start, x0Row, g0Row, prefix, g0Padding, out y, out m, out equal);
        _groupedRuns++;
        if (packedLengths is not null) _packedRuns++;
        return true;
    }

    /// <summary>How many of the grouped runs took packed tokens (<see cref="Ops.TokenPacking"/>).</summary>
    internal static long PackedRuns => _packedRuns;
    [ThreadStatic] private static long _packedRuns;

    private static bool SecantTakes(Tensor x, Tensor g) =>
        Enabled && x.device_type == TorchSharp.DeviceType.CPU && x.dtype == ScalarType.Float32 && g.dtype == ScalarType.Float64
        && x.is_contiguous() && g.is_contiguous() && g.shape.SequenceEqual(x.shape);

    /// <summary>
    /// The secant loop, row b of x (elements <paramref name="rowStart"/>[b] to [b + 1]) against the reference at
    /// <paramref name="x0Row"/>[b], <paramref name="g0Row"/>[b] for its first <paramref name="prefix"/>[b] elements, and
    /// against x0 = 0, g0 = <paramref name="g0Padding"/> past them.
    /// </summary>
    private static void Secant(Tensor x, Tensor g, long[] rowStart, nint[] x0Row, nint[] g0Row, long[] prefix, double g0Padding, out Tensor y, out Tensor m, out long equal)
    {
        long n = x.numel();
        y = empty_like(x);
        m = empty_like(x);
        nint px = Address(x), pg = Address(g), py = Address(y), pm = Address(m);
        long count = 0;
        Parallel.For(0, (n + Chunk - 1) / Chunk, c =>
        {
            long start = c * Chunk, end = Math.Min(n, start + Chunk), local = 0;
            float* xs = (float*)px, ys = (float*)py, ms = (float*)pm;
            double* gs = (double*)pg;
            // Walk [start, end) in runs that stay within one row and one side of its reference's end, so the inner
            // loops have no division and no test.
            int b = Array.BinarySearch(rowStart, start);
            b = b >= 0 ? b : ~b - 1;
            for (long i = start; i < end;)
            {
                while (i >= rowStart[b + 1]) b++; // empty rows (none in practice) are stepped over
                long within = i - rowStart[b], run = Math.Min(end - i, rowStart[b + 1] - i);
                float* xr = xs + i, yr = ys + i, mr = ms + i;
                double* gr = gs + i;
                if (within < prefix[b])
                {
                    run = Math.Min(run, prefix[b] - within);
                    float* x0r = (float*)x0Row[b] + within;
                    double* g0r = (double*)g0Row[b] + within;
                    for (long k = 0; k < run; k++)
                    {
                        double d = (double)xr[k] - x0r[k];
                        double gi = gr[k];
                        yr[k] = (float)gi;
                        if (d != 0) mr[k] = (float)((gi - g0r[k]) / d);
                        else { mr[k] = float.NaN; local++; }
                    }
                }
                else
                    for (long k = 0; k < run; k++)
                    {
                        double d = (double)xr[k] - 0f;
                        double gi = gr[k];
                        yr[k] = (float)gi;
                        if (d != 0) mr[k] = (float)((gi - g0Padding) / d);
                        else { mr[k] = float.NaN; local++; }
                    }
                i += run;
            }
            if (local > 0) Interlocked.Add(ref count, local);
        });
        equal = count;
        _runs++;
    }

    /// <summary>x0's shape is x's past the leading dimension, and its leading dimension is x's (a reference row per row) or 1 (one shared by the batch).</summary>
    private static bool ReferenceRowsFit(long[] x, long[] x0) =>
        x.Length == x0.Length && x.Length > 0 && x.AsSpan(1).SequenceEqual(x0.AsSpan(1)) && (x0[0] == x[0] || x0[0] == 1);

    /// <summary>A reference [1, l, …] whose rows are a prefix of x's [B, W, …] rows: l ≤ W and the same shape past them.</summary>
    private static bool PrefixFits(long[] x, long[] x0, bool packed = false) =>
        x.Length == x0.Length && x.Length >= 2 && x0[0] == 1 && (packed || x0[1] <= x[1]) && x.AsSpan(2).SequenceEqual(x0.AsSpan(2));

    private static nint Address(Tensor t) =>
        (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
}
