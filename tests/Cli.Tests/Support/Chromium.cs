using System.Diagnostics;
using System.IO.Compression;
using Xunit;

namespace AttributionFleet.Cli.Tests.Support;

/// <summary>A fact that needs headless Chromium (/usr/bin/chromium; .ci/services/chromium.sh installs it); skipped without it.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public ChromiumFactAttribute()
    {
        if (Chromium.Path is null) Skip = "headless Chromium not found at /usr/bin/chromium (install it with .ci/services/chromium.sh)";
    }
}

/// <summary>Runs headless Chromium on a local file: a screenshot or the DOM after load. Each run gets a fresh profile.</summary>
public static class Chromium
{
    public static string? Path => File.Exists("/usr/bin/chromium") ? "/usr/bin/chromium" : null;

    public static byte[] Screenshot(string htmlFile, int width = 1200, int height = 800)
    {
        var png = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"fleet-shot-{Guid.NewGuid():N}.png");
        try
        {
            Run($"--screenshot={png}", $"--window-size={width},{height}", new Uri(htmlFile).AbsoluteUri);
            Assert.True(File.Exists(png), "chromium wrote no screenshot");
            return File.ReadAllBytes(png);
        }
        finally
        {
            File.Delete(png);
        }
    }

    public static string DumpDom(string htmlFile) => Run("--dump-dom", new Uri(htmlFile).AbsoluteUri);

    private static string Run(params string[] args)
    {
        var profile = Directory.CreateTempSubdirectory("fleet-chromium-").FullName;
        try
        {
            var start = new ProcessStartInfo(Path ?? throw new InvalidOperationException("no chromium"))
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--hide-scrollbars", $"--user-data-dir={profile}" }.Concat(args))
                start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(90)))
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException("chromium did not finish in 90 s");
            }
            process.WaitForExit();
            Assert.True(process.ExitCode == 0, $"chromium exited with {process.ExitCode}: {stderr.Result}");
            return stdout.Result;
        }
        finally
        {
            try { Directory.Delete(profile, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }
}

/// <summary>A minimal PNG decoder for 8-bit RGB/RGBA non-interlaced images (what Chromium writes): RGB pixels.</summary>
public sealed record PngImage(int Width, int Height, byte[] Rgb)
{
    public (byte R, byte G, byte B) this[int x, int y] => (Rgb[(y * Width + x) * 3], Rgb[(y * Width + x) * 3 + 1], Rgb[(y * Width + x) * 3 + 2]);

    public static PngImage Decode(byte[] png)
    {
        byte[] signature = { 137, 80, 78, 71, 13, 10, 26, 10 };
        if (png.Length < 8 || !png.AsSpan(0, 8).SequenceEqual(signature)) throw new InvalidDataException("not a PNG");
        int width = 0, height = 0, channels = 0;
        var idat = new MemoryStream();
        for (int pos = 8; pos + 8 <= png.Length;)
        {
            int length = (png[pos] << 24) | (png[pos + 1] << 16) | (png[pos + 2] << 8) | png[pos + 3];
            var type = System.Text.Encoding.ASCII.GetString(png, pos + 4, 4);
            var data = png.AsSpan(pos + 8, length);
            if (type == "IHDR")
            {
                width = (data[0] << 24) | (data[1] << 16) | (data[2] << 8) | data[3];
                height = (data[4] << 24) | (data[5] << 16) | (data[6] << 8) | data[7];
                if (data[8] != 8 || data[12] != 0) throw new InvalidDataException($"unsupported PNG: bit depth {data[8]}, interlace {data[12]}");
                channels = data[9] switch { 2 => 3, 6 => 4, _ => throw new InvalidDataException($"unsupported PNG colour type {data[9]}") };
            }
            else if (type == "IDAT") idat.Write(data);
            else if (type == "IEND") break;
            pos += 12 + length;
        }
        idat.Position = 0;
        using var inflated = new MemoryStream();
        using (var z = new ZLibStream(idat, CompressionMode.Decompress)) z.CopyTo(inflated);
        var raw = inflated.ToArray();
        int stride = width * channels;
        var previous = new byte[stride];
        var current = new byte[stride];
        var rgb = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
        {
            int offset = y * (stride + 1);
            byte filter = raw[offset];
            for (int i = 0; i < stride; i++)
            {
                int a = i >= channels ? current[i - channels] : 0, b = previous[i], c = i >= channels ? previous[i - channels] : 0;
                int x = raw[offset + 1 + i];
                current[i] = (byte)(filter switch
                {
                    0 => x,
                    1 => x + a,
                    2 => x + b,
                    3 => x + (a + b) / 2,
                    4 => x + Paeth(a, b, c),
                    _ => throw new InvalidDataException($"bad PNG filter {filter}"),
                });
            }
            for (int px = 0; px < width; px++)
                for (int k = 0; k < 3; k++) rgb[(y * width + px) * 3 + k] = current[px * channels + k];
            (previous, current) = (current, previous);
        }
        return new PngImage(width, height, rgb);
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }
}
