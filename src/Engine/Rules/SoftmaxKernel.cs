using System.Runtime.Intrinsics;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

public static unsafe partial class CpuKernels
{
    private const float SeriesBelow = 0.5f;

    /// <summary>
    /// <see cref="SoftmaxRule.Exact"/> in one loop per row, for float32 on a CPU with AVX-512: the same decomposition and
    /// formulas, each row in two passes over memory instead of some thirty torch passes over the whole tensor. For a row
    /// x (and its reference row x0, of x's shape or one row shared along the leading dimension), softmax along the last
    /// dimension:
    /// <code>
    /// c = max(max x, max x0);  u = x − c, u0 = x0 − c;  e = exp u, e0 = exp u0   (exp rule:  m_e = max(e, e0)·h(|Δu|))
    /// s = Σ e, s0 = Σ e0;  g = log s, g0 = log s0   (log rule: m_g = log1p(|Δs| / min(s, s0)) / |Δs|; 1/s where equal;
    ///                                                 (g − g0)/(s − s0) where a half underflows, with g = logsumexp u)
    /// ℓ = u − g, ℓ0 = u0 − g0;  y = exp ℓ   (exp rule: m_y = max(e^ℓ, e^ℓ0)·h(|Δℓ|))
    /// h(d) = −expm1(−d)/d  (1 − d/2 + d²/6 − … below 0.5, (1 − e^−d)/d above; the exp rule takes e itself where d = 0)
    /// </code>
    /// The value passed on is softmax(x) from x alone (e/s when c is x's own maximum), as the composition passes it; the
    /// reference's value (softmax(x0), one row) stays with the caller. The sums and the log rule run in float64. Not
    /// bit-identical to the torch composition (another exp: .NET's vectorized one), the same to a few float32 ulps, and
    /// conserving the same way: each step's multiplier times its input's difference is its output's difference, to rounding.
    /// Returns false (the caller composes torch ops) for other dtypes, devices, layouts or CPUs.
    /// </summary>
    internal static bool TrySoftmaxExact(Tensor x, Tensor x0, out Tensor y, out Tensor mExp, out Tensor mLog, out Tensor mOut)
    {
        y = mExp = mLog = mOut = null!;
        if (!SoftmaxLoopTakes(x) || x0.dtype != ScalarType.Float32 || !x0.is_contiguous() || !ReferenceRowsFit(x.shape, x0.shape))
            return false;
        long n = x.shape[^1], rows = x.numel() / Math.Max(1, n);
        if (n == 0 || rows == 0) return false;
        long rowsPerLeading = rows / x.shape[0];
        nint px0 = Address(x0);
        bool shared = x0.shape[0] == 1;
        Softmax(x, (i, _) => (nint)((float*)px0 + ((shared ? 0 : i / rowsPerLeading * rowsPerLeading) + i % rowsPerLeading) * n), out y, out mExp, out mLog, out mOut);
        return true;
    }

    /// <summary>
    /// <see cref="TrySoftmaxExact"/> on attention scores [B, heads, W, W] of a padded batch of several lengths, against
    /// each length's reference scores as its tape holds them: group j's are [1, heads, l_j, l_j], and row b of x is taken
    /// against group <paramref name="groupOfRow"/>[b]'s. A query row q &lt; l_j reads its tape's row and, past l_j keys,
    /// finfo.min (masked keys); a padded query q ≥ l_j reads zeros, then finfo.min: each reference row exactly as padding the
    /// tape and copying it out to every row gives it (<see cref="Attribution.TapeReplayOps.Assemble"/>), built one row at a
    /// time where the loop reads it, instead of the whole tensor.
    /// </summary>
    internal static bool TrySoftmaxExactGrouped(Tensor x, IReadOnlyList<Tensor> x0, long[] groupOfRow, out Tensor y, out Tensor mExp, out Tensor mLog, out Tensor mOut)
    {
        y = mExp = mLog = mOut = null!;
        if (!SoftmaxLoopTakes(x) || x.dim() != 4 || x.shape[2] != x.shape[3] || groupOfRow.Length != x.shape[0] || groupOfRow.Any(j => j < 0 || j >= x0.Count))
            return false;
        long heads = x.shape[1], width = x.shape[3];
        if (width == 0 || x.numel() == 0) return false;
        var lengths = new long[x0.Count];
        var at = new nint[x0.Count];
        for (int j = 0; j < x0.Count; j++)
        {
            var r = x0[j];
            if (r.dtype != ScalarType.Float32 || !r.is_contiguous() || r.dim() != 4 || r.shape[0] != 1 || r.shape[1] != heads
                || r.shape[2] != r.shape[3] || r.shape[3] > width)
                return false;
            (lengths[j], at[j]) = (r.shape[3], Address(r));
        }
        Softmax(x, (i, scratch) =>
        {
            long b = i / (heads * width), within = i % (heads * width), h = within / width, q = within % width;
            long j = groupOfRow[b], l = lengths[j];
            float* tape = (float*)at[j];
            if (l == width) return (nint)(tape + (h * width + q) * width);
            var row = new Span<float>((float*)scratch, (int)width);
            if (q < l) new ReadOnlySpan<float>(tape + (h * l + q) * l, (int)l).CopyTo(row);
            else row[..(int)l].Clear();
            row[(int)l..].Fill(float.MinValue); // finfo(float32).min
            return scratch;
        }, out y, out mExp, out mLog, out mOut);
        _groupedRuns++;
        return true;
    }

    /// <summary>
    /// The loop over x's rows (the last dimension): row i against the reference row <paramref name="referenceRow"/> gives,
    /// which may build it in the row-sized scratch it is handed.
    /// </summary>
    private static void Softmax(Tensor x, Func<long, nint, nint> referenceRow, out Tensor y, out Tensor mExp, out Tensor mLog, out Tensor mOut)
    {
        long n = x.shape[^1], rows = x.numel() / n;
        var yt = empty_like(x);
        var et = empty_like(x);
        var ot = empty_like(x);
        var rowShape = x.shape.ToArray();
        rowShape[^1] = 1;
        var lt = empty(rowShape, ScalarType.Float32);
        nint px = Address(x), py = Address(yt), pe = Address(et), po = Address(ot), pl = Address(lt);
        const long rowsPerChunk = 64;
        long chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        Parallel.For(0, chunks, chunk =>
        {
            var scratch = new float[n];
            fixed (float* s = scratch)
            {
                long end = Math.Min(rows, (chunk + 1) * rowsPerChunk);
                for (long i = chunk * rowsPerChunk; i < end; i++)
                {
                    long row = i * n;
                    var x0 = (float*)referenceRow(i, (nint)s);
                    ((float*)pl)[i] = Row((float*)px + row, x0, (float*)py + row, (float*)pe + row, (float*)po + row, (int)n);
                }
            }
        });
        (y, mExp, mLog, mOut) = (yt, et, lt, ot);
        _runs++;
    }

    /// <summary>Whether <see cref="TrySoftmaxExact"/> takes x (given a reference of its layout): float32, contiguous, on a CPU with AVX-512.</summary>
    internal static bool SoftmaxLoopTakes(Tensor x) =>
        Enabled && Vector512.IsHardwareAccelerated && x.device_type == TorchSharp.DeviceType.CPU && x.dtype == ScalarType.Float32
        && x.is_contiguous() && x.dim() >= 2;

    /// <summary>One row: writes y, m_e and m_y, returns m_g (see <see cref="TrySoftmaxExact"/>).</summary>
    private static float Row(float* x, float* x0, float* y, float* me, float* mo, int n)
    {
        float cx = Max(x, n), c0 = Max(x0, n), c = MathF.Max(cx, c0);
        // Pass 1: e, e0, their sums and the exp rule's multiplier on u; e goes to y for now.
        var vc = Vector512.Create(c);
        var vs = Vector512<float>.Zero;
        var vs0 = Vector512<float>.Zero;
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            var u = Vector512.Load(x + j) - vc;
            var u0 = Vector512.Load(x0 + j) - vc;
            var e = Vector512.Exp(u);
            var e0 = Vector512.Exp(u0);
            Vector512.Store(ExpRule(e, e0, Vector512.Abs(u - u0)), me + j);
            Vector512.Store(e, y + j);
            vs += e;
            vs0 += e0;
        }
        double s = Vector512.Sum(Vector512.WidenLower(vs)) + Vector512.Sum(Vector512.WidenUpper(vs));
        double s0 = Vector512.Sum(Vector512.WidenLower(vs0)) + Vector512.Sum(Vector512.WidenUpper(vs0));
        for (; j < n; j++)
        {
            float u = x[j] - c, u0 = x0[j] - c, e = MathF.Exp(u), e0 = MathF.Exp(u0);
            me[j] = ExpRule(e, e0, MathF.Abs(u - u0));
            y[j] = e;
            s += e;
            s0 += e0;
        }
        // The log rule on the sums, in float64 (a row's work, not an element's).
        const double tiny = 1.1754943508222875E-38; // float32's smallest normal, as the composition's guard
        float sf = (float)s, s0f = (float)s0;
        double g = sf < tiny ? LogSumExp(x, n, c, cx) : Math.Log(sf);
        double g0 = s0f < tiny ? LogSumExp(x0, n, c, c0) : Math.Log(s0f);
        double ds = Math.Abs((double)sf - s0f), low = Math.Min(sf, s0f);
        double mg = ds == 0 ? 1.0 / sf : low < tiny ? (g - g0) / ((double)sf - s0f) : Math.Log(1 + ds / low) / ds;
        // Pass 2: ℓ, ℓ0, the exp rule on ℓ, and the value softmax(x).
        float gf = (float)g, g0f = (float)g0;
        bool ownShift = c == cx && sf >= tiny;
        float inverse = ownShift ? (float)(1.0 / s) : 0f;
        double sx = 0;
        if (!ownShift)
        {
            for (int k = 0; k < n; k++) { float ex = MathF.Exp(x[k] - cx); y[k] = ex; sx += ex; }
            inverse = (float)(1.0 / sx);
        }
        var vg = Vector512.Create(gf);
        var vg0 = Vector512.Create(g0f);
        var vi = Vector512.Create(inverse);
        j = 0;
        for (; j + 16 <= n; j += 16)
        {
            var l = (Vector512.Load(x + j) - vc) - vg;
            var l0 = (Vector512.Load(x0 + j) - vc) - vg0;
            Vector512.Store(ExpRule(Vector512.Exp(l), Vector512.Exp(l0), Vector512.Abs(l - l0)), mo + j);
            Vector512.Store(Vector512.Load(y + j) * vi, y + j);
        }
        for (; j < n; j++)
        {
            float l = (x[j] - c) - gf, l0 = (x0[j] - c) - g0f;
            mo[j] = ExpRule(MathF.Exp(l), MathF.Exp(l0), MathF.Abs(l - l0));
            y[j] *= inverse;
        }
        return (float)mg;
    }

    /// <summary>Exp rule multiplier from both exps and |Δ|: <c>max(e, e0) · h(|Δ|)</c>, <c>e</c> where Δ = 0.</summary>
    private static Vector512<float> ExpRule(Vector512<float> e, Vector512<float> e0, Vector512<float> d)
    {
        // h(d) = (1 − e^−d)/d: its series below 0.5 (no cancellation; truncation 1e-8 relative at 0.5), the closed form above.
        var series = Vector512.Create(1f / 40320);
        series = series * -d + Vector512.Create(1f / 5040);
        series = series * -d + Vector512.Create(1f / 720);
        series = series * -d + Vector512.Create(1f / 120);
        series = series * -d + Vector512.Create(1f / 24);
        series = series * -d + Vector512.Create(1f / 6);
        series = series * -d + Vector512.Create(0.5f);
        series = series * -d + Vector512.Create(1f);
        var closed = (Vector512<float>.One - Vector512.Exp(-d)) / d;
        var h = Vector512.ConditionalSelect(Vector512.LessThan(d, Vector512.Create(SeriesBelow)), series, closed);
        return Vector512.ConditionalSelect(Vector512.Equals(d, Vector512<float>.Zero), e, Vector512.Max(e, e0) * h);
    }

    private static float ExpRule(float e, float e0, float d)
    {
        if (d == 0) return e;
        float h = d < SeriesBelow
            ? ((((((((1f / 40320) * -d + 1f / 5040) * -d + 1f / 720) * -d + 1f / 120) * -d + 1f / 24) * -d + 1f / 6) * -d + 0.5f) * -d + 1f)
            : (1f - MathF.Exp(-d)) / d;
        return MathF.Max(e, e0) * h;
    }

    private static float Max(float* p, int n)
    {
        float m = float.NegativeInfinity;
        int j = 0;
        if (n >= 16)
        {
            var v = Vector512.Load(p);
            for (j = 16; j + 16 <= n; j += 16) v = Vector512.Max(v, Vector512.Load(p + j));
            for (int k = 0; k < 16; k++) m = MathF.Max(m, v[k]);
        }
        for (; j < n; j++) m = MathF.Max(m, p[j]);
        return m;
    }

    /// <summary><c>log Σ exp(p − c)</c> through the row's own maximum (where Σ exp(p − c) underflows).</summary>
    private static double LogSumExp(float* p, int n, float c, float max)
    {
        float top = max - c;
        double sum = 0;
        for (int k = 0; k < n; k++) sum += Math.Exp((double)(p[k] - c) - top);
        return top + Math.Log(sum);
    }
}
