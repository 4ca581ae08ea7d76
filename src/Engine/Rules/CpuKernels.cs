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

    /// <summary>How many of those runs took one reference row per group with a row map (a padded batch of several lengths).</summary>
    internal static long MappedRuns => _mappedRuns;
    [ThreadStatic] private static long _mappedRuns;

    private const long Chunk = 1 << 16;

    /// <summary>
    /// The generic rescale tail for float32 activations with float64 values (<see cref="RescaleRule.Apply"/> with
    /// promotion): <c>y = (float) g</c>, <c>m = (float) ((g − g0) / ((double) x − (double) x0))</c>; where
    /// <c>x == x0</c>, <c>m</c> is NaN and counted, for the caller to fill with the derivative. x0 and g0 are either
    /// x's shape or one row shared along the leading dimension. Replaces eight passes (two casts, two differences,
    /// the zero test and its reduction, the division, two casts back) by one.
    /// </summary>
    /// <remarks>
    /// With <paramref name="referenceRowOf"/> (one entry per row of x's leading dimension), x0 and g0 hold one row per
    /// reference instead, and row b of x is taken against row <c>referenceRowOf[b]</c>: a padded batch of several lengths
    /// against each length's own reference, without copying a reference row out to every text.
    /// </remarks>
    internal static bool TrySecant(Tensor x, Tensor x0, Tensor g, Tensor g0, out Tensor y, out Tensor m, out long equal, long[]? referenceRowOf = null)
    {
        y = m = null!;
        equal = 0;
        if (!Enabled || x.device_type != TorchSharp.DeviceType.CPU || x.dtype != ScalarType.Float32 || x0.dtype != ScalarType.Float32
            || g.dtype != ScalarType.Float64 || g0.dtype != ScalarType.Float64
            || !x.is_contiguous() || !x0.is_contiguous() || !g.is_contiguous() || !g0.is_contiguous()
            || !g.shape.SequenceEqual(x.shape) || !g0.shape.SequenceEqual(x0.shape) || !ReferenceRowsFit(x.shape, x0.shape, referenceRowOf))
            return false;
        long n = x.numel(), row = x.shape[0] == 0 ? 1 : n / x.shape[0];
        long[] rowOf = ReferenceRows(x.shape[0], x0.shape[0], referenceRowOf);
        y = empty_like(x);
        m = empty_like(x);
        nint px = Address(x), px0 = Address(x0), pg = Address(g), pg0 = Address(g0);
        nint py = Address(y), pm = Address(m);
        long count = 0;
        Parallel.For(0, (n + Chunk - 1) / Chunk, c =>
        {
            long start = c * Chunk, end = Math.Min(n, start + Chunk), local = 0;
            float* xs = (float*)px, x0s = (float*)px0, ys = (float*)py, ms = (float*)pm;
            double* gs = (double*)pg, g0s = (double*)pg0;
            // Walk [start, end) in runs that stay within one row, so the inner loop has no division.
            for (long i = start; i < end;)
            {
                long within = i % row, run = Math.Min(end - i, row - within), j0 = rowOf[i / row] * row + within;
                float* xr = xs + i, x0r = x0s + j0, yr = ys + i, mr = ms + i;
                double* gr = gs + i, g0r = g0s + j0;
                for (long k = 0; k < run; k++)
                {
                    double d = (double)xr[k] - x0r[k];
                    double gi = gr[k];
                    yr[k] = (float)gi;
                    if (d != 0) mr[k] = (float)((gi - g0r[k]) / d);
                    else { mr[k] = float.NaN; local++; }
                }
                i += run;
            }
            if (local > 0) Interlocked.Add(ref count, local);
        });
        equal = count;
        _runs++;
        if (referenceRowOf is not null) _mappedRuns++;
        return true;
    }

    /// <summary>
    /// x0's shape is x's past the leading dimension, and its leading dimension is x's (a reference row per row), 1 (one
    /// shared by the batch), or, with <paramref name="referenceRowOf"/>, any count that every entry of the map indexes.
    /// </summary>
    private static bool ReferenceRowsFit(long[] x, long[] x0, long[]? referenceRowOf)
    {
        if (x.Length != x0.Length || x.Length == 0 || !x.AsSpan(1).SequenceEqual(x0.AsSpan(1))) return false;
        if (referenceRowOf is null) return x0[0] == x[0] || x0[0] == 1;
        return referenceRowOf.Length == x[0] && referenceRowOf.All(r => r >= 0 && r < x0[0]);
    }

    /// <summary>The reference row of each of x's leading rows: the map when given, else its own row or the shared one.</summary>
    private static long[] ReferenceRows(long rows, long referenceRows, long[]? referenceRowOf) =>
        referenceRowOf ?? (referenceRows == 1 ? new long[rows] : Enumerable.Range(0, (int)rows).Select(i => (long)i).ToArray());

    private static nint Address(Tensor t) =>
        (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
}
