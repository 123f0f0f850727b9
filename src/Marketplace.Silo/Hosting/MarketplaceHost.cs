using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Marketplace.Grains;
using Marketplace.Silo.Apis;
using Marketplace.Silo.Database;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using Npgsql;
using OpenTelemetry.Metrics;
using Orleans.Dashboard;
using Orleans.Configuration;
using Serilog;
using ILogger = Microsoft.Extensions.Logging.ILogger;
using Serilog.Events;
using Serilog.Extensions.Logging;
using Serilog.Formatting.Compact;

namespace Marketplace.Silo.Hosting;

/// <summary>
/// One marketplace process: the database (embedded unless a connection string is set), migrations,
/// the Orleans silo, the HTTP front door and the dashboard. Tests start several of these in one process.
/// </summary>
public sealed partial class MarketplaceHost : IAsyncDisposable
{
    /// <summary>Name of the connection string (<c>ConnectionStrings:Marketplace</c>).</summary>
    public const string ConnectionStringName = "Marketplace";

    // The meter Orleans publishes its runtime metrics on (OrleansInstruments).
    private const string OrleansMeterName = "Microsoft.Orleans";

    private readonly EmbeddedPostgres? _postgres;
    private readonly Serilog.Core.Logger _logger;

    private MarketplaceHost(WebApplication app, EmbeddedPostgres? postgres, Serilog.Core.Logger logger, string connectionString)
    {
        App = app;
        _postgres = postgres;
        _logger = logger;
        ConnectionString = connectionString;
    }

    /// <summary>The running web application (front door, silo, dashboard).</summary>
    public WebApplication App { get; }

    /// <summary>The database this host uses.</summary>
    public string ConnectionString { get; }

    /// <summary>The first HTTP address the front door listens on.</summary>
    public Uri BaseAddress => new(App.Urls.First());

    /// <summary>Grain access for in-process callers and tests.</summary>
    public IGrainFactory Grains => App.Services.GetRequiredService<IGrainFactory>();

    /// <summary>Starts the database (when embedded), applies migrations, then starts the silo and the front door.</summary>
    public static async Task<MarketplaceHost> StartAsync(string[] args, Action<WebApplicationBuilder>? configure = null, CancellationToken cancellationToken = default)
    {
        // Settings ship next to the binary, so the host runs the same from any working directory;
        // relative data paths (the embedded database) still resolve against the working directory.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        configure?.Invoke(builder);

        var marketplace = builder.Configuration.GetSection(MarketplaceOptions.Section).Get<MarketplaceOptions>() ?? new MarketplaceOptions();
        var logger = CreateLogger(builder.Configuration, marketplace.LogFormat);
        using var bootLoggers = new SerilogLoggerFactory(logger);
        var boot = bootLoggers.CreateLogger<MarketplaceHost>();
        EmbeddedPostgres? postgres = null;
        try
        {
            var siloOptions = builder.Configuration.GetSection(SiloHostOptions.Section).Get<SiloHostOptions>() ?? new SiloHostOptions();
            var metricsOptions = builder.Configuration.GetSection(MetricsOptions.Section).Get<MetricsOptions>() ?? new MetricsOptions();
            var problems = siloOptions.Validate().ToList();
            if (problems.Count > 0)
            {
                throw new OptionsValidationException(SiloHostOptions.Section, typeof(SiloHostOptions), problems);
            }

            var connectionString = builder.Configuration.GetConnectionString(ConnectionStringName);
            if (string.IsNullOrWhiteSpace(connectionString))
            {
                var embedded = builder.Configuration.GetSection("Database:Embedded").Get<EmbeddedPostgresOptions>() ?? new EmbeddedPostgresOptions();
                postgres = new EmbeddedPostgres(embedded, bootLoggers.CreateLogger<EmbeddedPostgres>());
                await postgres.StartAsync(cancellationToken);
                connectionString = postgres.ConnectionString;
            }
            else
            {
                ValidateConnectionString(connectionString);
            }

            await new MigrationRunner(connectionString, bootLoggers.CreateLogger<MigrationRunner>()).ApplyAsync(cancellationToken);

            builder.Services.AddSerilog(logger, dispose: false);
            AddMarketplaceSilo(builder, siloOptions, connectionString);
            AddMarketplaceFrontDoor(builder, connectionString);
            AddMarketplaceMetrics(builder, metricsOptions);

            var app = builder.Build();
            MapMarketplace(app, siloOptions, metricsOptions);
            await app.StartAsync(cancellationToken);
            LogStarted(boot, string.Join(", ", app.Urls), siloOptions.SiloPort, siloOptions.GatewayPort);
            return new MarketplaceHost(app, postgres, logger, connectionString);
        }
        catch (Exception exception)
        {
            LogStartFailed(boot, exception);
            if (postgres is not null)
            {
                await postgres.DisposeAsync();
            }

            await logger.DisposeAsync();
            throw;
        }
    }

    /// <summary>Waits until the process is asked to stop (Ctrl+C, SIGTERM).</summary>
    public Task WaitForShutdownAsync() => App.WaitForShutdownAsync();

    /// <summary>Stops the front door and silo (grains write their state on deactivation), then the embedded database.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await App.StopAsync();
        }
        finally
        {
            await App.DisposeAsync();

            // Idle pooled connections (the Orleans providers' and ours share this connection string) would otherwise stay
            // open on the server for minutes after the host is gone.
            await using (var connection = new NpgsqlConnection(ConnectionString))
            {
                NpgsqlConnection.ClearPool(connection);
            }

            if (_postgres is not null)
            {
                await _postgres.DisposeAsync();
            }

            await _logger.DisposeAsync();
        }
    }

    private static void AddMarketplaceSilo(WebApplicationBuilder builder, SiloHostOptions options, string connectionString)
    {
        builder.UseOrleans(silo =>
        {
            silo.Configure<ClusterOptions>(cluster =>
            {
                cluster.ClusterId = options.ClusterId;
                cluster.ServiceId = options.ServiceId;
            });
            silo.ConfigureEndpoints(IPAddress.Parse(options.AdvertisedAddress), options.SiloPort, options.GatewayPort, listenOnAnyHostAddress: false);
            silo.UseAdoNetClustering(clustering =>
            {
                clustering.Invariant = "Npgsql";
                clustering.ConnectionString = connectionString;
            });
            silo.AddAdoNetGrainStorage(StorageNames.Marketplace, storage =>
            {
                storage.Invariant = "Npgsql";
                storage.ConnectionString = connectionString;
            });
            silo.ConfigureMarketplaceMembership();
            if (options.Dashboard)
            {
                silo.AddDashboard();
            }
        });
        builder.Services.AddMarketplaceGrains();
    }

    private static void AddMarketplaceFrontDoor(WebApplicationBuilder builder, string connectionString)
    {
        var services = builder.Services;
        services.AddOptions<MarketplaceOptions>().BindConfiguration(MarketplaceOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<DemoOptions>().BindConfiguration(DemoOptions.Section);
        services.AddSingleton(_ => new NpgsqlDataSourceBuilder(connectionString).Build());
        services.ConfigureHttpJsonOptions(json => json.SerializerOptions.Converters.Add(new StrictEnumConverterFactory()));
        services.AddSingleton<AdminAuthentication>();
        services.AddSingleton<AuditLog>();
        services.AddCallLog();
        services.AddHostedService<DemoCatalog>();
        services.AddProblemDetails(problems => problems.CustomizeProblemDetails = context =>
            context.ProblemDetails.Extensions["trackId"] = context.HttpContext.GetTrackId());
        services.AddExceptionHandler<ExceptionProblems>();
        services.AddHealthChecks()
            .AddCheck<DatabaseHealthCheck>("database", tags: ["ready"])
            .AddCheck<SiloHealthCheck>("silo", tags: ["ready"])
            .AddCheck<BackgroundLoopsHealthCheck>("background-loops", tags: ["ready"]);
        services.AddOptions<KestrelServerOptions>().Configure<IOptions<MarketplaceOptions>>((kestrel, marketplace) =>
        {
            kestrel.Limits.MaxRequestBodySize = marketplace.Value.MaxRequestBodyBytes;
            kestrel.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            kestrel.Limits.MaxRequestLineSize = 8 * 1024;
            kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            kestrel.AddServerHeader = false;
        });
    }

    private static void AddMarketplaceMetrics(WebApplicationBuilder builder, MetricsOptions options)
    {
        if (!options.Enabled)
        {
            return;
        }

        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(MarketplaceMetrics.MeterName, OrleansMeterName)
            .AddPrometheusExporter());
    }

    private static void MapMarketplace(WebApplication app, SiloHostOptions options, MetricsOptions metrics)
    {
        app.UseTrackIds();
        app.UseJsonCharsetCheck();
        app.UseExceptionHandler();
        app.UseStatusCodePages();

        app.MapGet("/health/live", () => TypedResults.Ok(new { status = "live" })).WithTags("Health");
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = check => check.Tags.Contains("ready") });

        app.MapCallApi();
        app.MapTokensApi();
        app.MapConsumerKeysApi();
        app.MapProviderServicesApi();
        app.MapConsumerCallsApi();
        app.MapConsumerAlertsApi();
        app.MapConsumerReportsApi();
        app.MapProviderReportsApi();
        var admin = app.MapGroup("/admin").AddEndpointFilter<AdminAuthentication>();
        admin.MapAdminCallsApi();
        admin.MapProvidersApi();
        admin.MapServicesApi();
        admin.MapAccountsApi();
        admin.MapAdminKeysApi();
        admin.MapAdminReportsApi();

        if (options.Dashboard)
        {
            app.MapOrleansDashboard("/dashboard").AddEndpointFilter<AdminAuthentication>();
        }

        if (metrics.Enabled)
        {
            // Created now rather than on the first call, so its gauges are scraped from the start.
            _ = app.Services.GetRequiredService<MarketplaceMetrics>();
            app.MapPrometheusScrapingEndpoint("/metrics").AddEndpointFilter<IEndpointConventionBuilder, AdminAuthentication>();
        }
    }

    private static Serilog.Core.Logger CreateLogger(IConfiguration configuration, string format)
    {
        var config = new LoggerConfiguration()
            .MinimumLevel.Information()
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .MinimumLevel.Override("Microsoft.Hosting.Lifetime", LogEventLevel.Information)
            .MinimumLevel.Override("Orleans", LogEventLevel.Warning)
            .MinimumLevel.Override("Polly", LogEventLevel.Warning)
            .MinimumLevel.Override("System.Net.Http.HttpClient", LogEventLevel.Warning)
            .ReadFrom.Configuration(configuration)
            .Enrich.FromLogContext()
            .Enrich.With<TrackIdEnricher>();
        return (format == "json"
                ? config.WriteTo.Console(new RenderedCompactJsonFormatter())
                : config.WriteTo.Console(outputTemplate: "[{Timestamp:HH:mm:ss} {Level:u3}] {SourceContext}: {Message:lj} {TrackId}{NewLine}{Exception}"))
            .CreateLogger();
    }

    private static void ValidateConnectionString(string connectionString)
    {
        try
        {
            _ = new NpgsqlConnectionStringBuilder(connectionString);
        }
        catch (ArgumentException exception)
        {
            // Never echo the connection string: it may hold a password.
            throw new OptionsValidationException("ConnectionStrings", typeof(string),
                [$"ConnectionStrings:{ConnectionStringName} is not a valid PostgreSQL connection string: {exception.Message}"]);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Marketplace listening on {Urls} (silo port {SiloPort}, gateway port {GatewayPort})")]
    private static partial void LogStarted(ILogger logger, string urls, int siloPort, int gatewayPort);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Marketplace failed to start")]
    private static partial void LogStartFailed(ILogger logger, Exception exception);
}
